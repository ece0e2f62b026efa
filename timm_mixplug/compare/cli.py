"""``python -m timm_mixplug compare``: check the input, hold ``--output``, train the runs without a result,
write the report. Exit codes: 0 done, 1 a run failed, 2 bad input (one ``compare: error:`` line, nothing
written), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM; the running children are stopped too)."""
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from timm_mixplug.compare.errors import CompareError
from timm_mixplug.compare.guard import OutputLock, check_no_live_children
from timm_mixplug.compare.options import parse_options
from timm_mixplug.compare.preflight import check_setup
from timm_mixplug.compare.report import figure, markdown, summarize
from timm_mixplug.compare.runner import DevicePool, Runner, Terminated, run_all
from timm_mixplug.compare.runs import Run, check_result_matches, load_result, write_json

__all__ = ['main']

_CONTINUE = 'run the same command again to continue (finished runs are reused, unfinished ones resumed)'


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def _cached(opts, runs: Sequence[Run]) -> Dict[str, Optional[dict]]:
    """Each run's result file (None: none yet); one trained from other arguments or config content is refused
    unless only the report is rebuilt."""
    cached = {r.name: load_result(r, opts.metric) for r in runs}
    if opts.report_only:
        if not any(cached.values()):
            raise CompareError(f'--report-only: no result files for these runs in {Path(opts.output) / "results"}')
        return cached
    for r in runs:
        if cached[r.name] is not None:
            check_result_matches(r, cached[r.name])
    return cached


def _train(opts, todo: List[Run]) -> Runner:
    """Train ``todo`` (``--jobs`` at a time); the runner tells what failed and whether it was stopped."""
    threads = opts.threads or max(1, _cores() // opts.jobs)
    print(f'compare: {len(todo)} run(s) to train, {opts.jobs} at a time, {threads} thread(s) each', flush=True)
    pool = DevicePool(opts.device_list, opts.jobs) if opts.device_list else None
    runner = Runner(opts.metric, threads, len(todo), pool)
    run_all(runner, todo, opts.jobs)
    return runner


def _report(opts, runs: Sequence[Run], cached: Dict[str, Optional[dict]], failed: List[dict]) -> int:
    """Write compare.md / .json / .png from the result files and print the table; 1 if a run failed."""
    out = Path(opts.output)
    results: Dict[str, Dict[int, dict]] = {m: {} for m in opts.names}
    for r in runs:
        res = cached[r.name] or load_result(r, opts.metric)
        if res is not None:
            results[r.method][r.seed] = res
    summary = summarize(results, opts.method_args, opts.seed_list, opts.baseline, opts.metric, opts.setup)
    summary['failed'] = failed
    text = markdown(summary, failed)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'compare.md').write_text(text)
    write_json(out / 'compare.json', summary)
    figure(summary, results, out / 'compare.png')
    print(text, end='', flush=True)
    return 1 if failed else 0


def _compare(argv: Sequence[str]) -> int:
    opts, runs = parse_options(argv)
    cached = _cached(opts, runs)
    todo = [] if opts.report_only else [r for r in runs if cached[r.name] is None]
    note = None
    if todo:
        try:
            note = check_setup(todo, opts.method_args, opts.device_list)
        except CompareError as e:
            if not opts.passed:
                raise
            raise CompareError(f'{e}; compare passed {" ".join(opts.passed)} on to train.py (flags compare does not '
                               f'know: is a compare option misspelled?)') from None
    with OutputLock(Path(opts.output)):
        check_no_live_children(todo)
        if opts.passed:
            print(f'compare: passing {" ".join(opts.passed)} to train.py (flags compare does not know)', flush=True)
        if note:
            print(note, flush=True)
        failed: List[dict] = []
        if not opts.report_only and len(todo) < len(runs):
            print(f'compare: reused {len(runs) - len(todo)} finished run(s) from {Path(opts.output) / "results"}',
                  flush=True)
        if todo:
            runner = _train(opts, todo)
            if runner.stop.is_set():
                how = 'terminated (SIGTERM); the running train.py processes saved their state' if runner.terminated \
                    else 'interrupted'
                print(f'compare: {how}; {_CONTINUE}', file=sys.stderr)
                return 143 if runner.terminated else 130
            failed = runner.failed
        return _report(opts, runs, cached, failed)


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m timm_mixplug compare ...``: 0 done, 1 a run failed, 2 bad input (one ``compare: error:``
    line, nothing written), 130 interrupted, 143 terminated (SIGTERM)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _compare(argv)
    except CompareError as e:
        print(f'compare: error: {e}', file=sys.stderr)
        return 2
    except OSError as e:  # writing the report: a full disk, a folder that became unwritable
        print(f'compare: error: {e.filename or "file access"}: {e.strerror or e}; the result files are kept, '
              f'--report-only writes the report again', file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # before or after the runs: no train.py is running
        term = isinstance(e, Terminated)
        print(f'compare: {"terminated (SIGTERM)" if term else "interrupted"}; {_CONTINUE}', file=sys.stderr)
        return 143 if term else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
