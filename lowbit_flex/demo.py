"""Exercise every capability and print a short table: ``python -m lowbit_flex.demo``.

On CPU it runs the exact reference paths and reports their error against float64; on a CUDA GPU it runs the
kernels and times them against their baselines. Each capability lives in ``lowbit_flex/_demos/<name>.py`` with
``run(device) -> list[Row]``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import traceback

import torch

from lowbit_flex._demos import Row


def _table(rows: list[Row]) -> str:
    head = ["capability", "path", "rel. error", "ms", "baseline", "baseline ms", "speed-up"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        speed = f"{r.baseline_ms / r.ms:.2f}×" if r.ms and r.baseline_ms else "—"
        cells = [r.capability, r.path, f"{r.rel_error:.2e}", f"{r.ms:.3f}" if r.ms else "—", r.baseline or "—"]
        cells += [f"{r.baseline_ms:.3f}" if r.baseline_ms else "—", speed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lowbit_flex.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", nargs="*", default=[], help="capabilities (module names in lowbit_flex/_demos)")
    args = p.parse_args(argv)
    import lowbit_flex._demos as demos

    rows, failed = [], []
    for mod in sorted(m.name for m in pkgutil.iter_modules(demos.__path__)):
        if args.only and mod not in args.only:
            continue
        try:
            rows += importlib.import_module(f"lowbit_flex._demos.{mod}").run(args.device)
        except Exception:
            traceback.print_exc()
            failed.append(mod)
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (exact reference paths)"
    print(f"lowbit_flex demo on {gpu}, torch {torch.__version__}\n")
    print(_table(rows))
    if failed:
        print(f"\nFAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
