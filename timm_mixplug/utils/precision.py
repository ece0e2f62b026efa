"""Whether a device computes bfloat16 natively (where ``--amp --amp-dtype bfloat16`` pays off)."""
import torch

__all__ = ['native_bf16', 'emulated_bf16_cpu']


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA with bf16 (no emulation), a CPU with AVX512-BF16 or AMX.
    Elsewhere bf16 autocast is emulated: on an AVX2 CPU a ResNet-20 step took 10x its fp32 time."""
    if device.type == 'cuda':
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == 'cpu':
        return any(getattr(torch.cpu, f, lambda: False)() for f in ('_is_avx512_bf16_supported',
                                                                    '_is_amx_tile_supported'))
    return False


def emulated_bf16_cpu(device) -> bool:
    """Whether bf16 autocast on ``device`` would be emulated: a CPU without AVX512-BF16 or AMX (train.py's
    warning and compare's line before training share this test)."""
    device = torch.device(device)
    return device.type == 'cpu' and not native_bf16(device)
