"""Whether timm can load a model's pretrained weights without waiting on the network.

``timm.create_model(pretrained=True)`` asks the Hugging Face Hub (or a URL) for weights that are not in the local
cache; without internet access the client retries for about a minute before it fails. Checked first, in this
order: a file named by the pretrained config; the local Hub cache in its documented layout
(``<HF_HUB_CACHE>/models--<org>--<name>/snapshots/<revision>/<file>``), or torch hub's checkpoint folder for
weights timm fetches by URL; offline mode (``HF_HUB_OFFLINE``); and, unless a proxy is set (the client would go
through it), whether the weights' host accepts a connection within a few seconds.
"""
import os
import socket
import threading
from typing import Any, Dict, Optional
from urllib.parse import urlparse

import timm
import torch

__all__ = ['weights_unavailable']

PROBE_SECONDS = 3.0
_HF_FILES = ('model.safetensors', 'pytorch_model.bin', 'open_clip_pytorch_model.bin', 'open_clip_model.safetensors')
_TRUE = ('1', 'on', 'yes', 'true')
_PROXY_VARS = ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy', 'HTTP_PROXY', 'http_proxy')


def _offline() -> bool:
    return os.environ.get('HF_HUB_OFFLINE', '').strip().lower() in _TRUE


def _hf_cache_dir() -> str:
    if os.environ.get('HF_HUB_CACHE'):
        return os.environ['HF_HUB_CACHE']
    home = os.environ.get('HF_HOME') or os.path.join(
        os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache'), 'huggingface')
    return os.path.join(home, 'hub')


def _hf_cached(hub_id: str, filename: Optional[str]) -> bool:
    repo = hub_id.partition('@')[0]
    snapshots = os.path.join(_hf_cache_dir(), 'models--' + repo.replace('/', '--'), 'snapshots')
    if not os.path.isdir(snapshots):
        return False
    return any(os.path.isfile(os.path.join(snapshots, rev, f)) for rev in os.listdir(snapshots)
               for f in ((filename,) if filename else _HF_FILES))


def _url_cached(url: str) -> bool:
    return os.path.isfile(os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(urlparse(url).path)))


def _reachable(host: str) -> bool:
    """A TCP connection to ``host``:443 within ``PROBE_SECONDS`` (name lookup included: run in a thread)."""
    ok = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=PROBE_SECONDS).close()
            ok.append(True)
        except OSError:
            pass
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(PROBE_SECONDS + 0.5)
    return bool(ok)


def weights_unavailable(name: str, overlay: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """None when the pretrained weights of timm model ``name`` (with ``pretrained_cfg_overlay`` ``overlay``) are
    local or their host answers; else why they cannot be had now (offline mode, or the host unreachable).
    A model timm has no pretrained config for is left to timm."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    d = dict(cfg.to_dict(), **(overlay or {}))
    if d.get('state_dict') is not None or d.get('file'):
        return None
    hub_id, url = d.get('hf_hub_id'), d.get('url')  # timm takes the Hub when the config names it
    if not hub_id and not url:
        return None
    if _hf_cached(hub_id, d.get('hf_hub_filename')) if hub_id else _url_cached(url):
        return None
    if _offline():
        return 'offline mode (HF_HUB_OFFLINE is set)'
    if any(os.environ.get(k) for k in _PROXY_VARS):  # the client goes through the proxy: a direct probe says nothing
        return None
    endpoint = os.environ.get('HF_ENDPOINT') or 'https://huggingface.co'
    host = urlparse(endpoint if hub_id else url).hostname
    if host and not _reachable(host):
        return f'{host} cannot be reached'
    return None
