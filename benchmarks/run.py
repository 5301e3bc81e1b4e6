"""Run every benchmark (``benchmarks/bench_*.py``) on a CUDA GPU and print ratio tables.

    python -m benchmarks.run --out bench_out [--only quantize] [--quick]

Writes ``results.json`` (with GPU name, torch and triton versions), ``results.md`` and PNG plots to ``--out``
(default ``$LOWBIT_BENCH_OUT`` or ``bench_out``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch

from benchmarks.harness import Bench


class CutShort(BaseException):
    """SIGTERM arrived (``timeout`` on a device call): stop, but keep the rows measured so far. A BaseException,
    so the benchmarks' own ``except Exception`` fallbacks do not swallow it."""


def _cut_short(signum, frame):
    raise CutShort(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("LOWBIT_BENCH_OUT", "bench_out"))
    p.add_argument("--only", nargs="*", default=[], help="substrings of benchmark module names to run")
    p.add_argument("--quick", action="store_true", help="fewer cases (smoke run)")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks need a CUDA GPU; on CPU run `python -m lowbit_flex.demo` instead", file=sys.stderr)
        return 2
    # Benchmarks sweep shapes through compiled functions: keep dynamo from silently falling back to eager.
    torch._dynamo.config.recompile_limit = 1024
    torch._dynamo.config.cache_size_limit = 1024
    names = sorted(f.stem for f in Path(__file__).parent.glob("bench_*.py"))
    names = [n for n in names if not args.only or any(s in n for s in args.only)]
    bench = Bench(Path(args.out), quick=args.quick)
    print(f"environment: {bench.env}")
    failed = []
    signal.signal(signal.SIGTERM, _cut_short)
    for name in names:
        t0 = time.time()
        print(f"== {name}", flush=True)
        try:
            importlib.import_module(f"benchmarks.{name}").run(bench)
        except CutShort:
            print(f"   {name}: cut short after {time.time() - t0:.0f} s; writing the rows measured so far", flush=True)
            failed.append(name)
            break
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"   {name}: {time.time() - t0:.0f} s", flush=True)
        bench.write()  # keep partial results if a later benchmark dies
    print("\n" + bench.write())
    if failed:
        print(f"FAILED benchmarks: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
