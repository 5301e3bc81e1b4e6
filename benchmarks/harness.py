"""Shared benchmark harness: timing, ratio tables against baselines from the same run, JSON and PNG output.

A benchmark module ``benchmarks/bench_<name>.py`` defines ``run(bench: Bench) -> None``. It checks correctness
first (against a float64 or exact reference, on fresh random inputs) and records the error in its rows, then
times each method with :meth:`Bench.time` and adds one row per case to a :class:`Table`.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch


def selected_names(env: str, choices: Sequence[str]) -> list[str]:
    """The comma-separated names in environment variable ``env``, each one of ``choices`` (a typo raises rather than
    silently selecting nothing); all of ``choices`` where ``env`` is unset or empty."""
    if not os.environ.get(env):
        return list(choices)
    picked = os.environ[env].split(",")
    if unknown := set(picked) - set(choices):
        raise ValueError(f"{env}: expected names from {list(choices)}, got {sorted(unknown)}")
    return picked


def host_us(fn: Callable, *args, calls: int = 300) -> float:
    """Host microseconds per eager call of ``fn(*args)`` (no CUDA graph): back-to-back calls timed with
    ``time.perf_counter`` and synchronized only at both ends, so the GPU never waits on the host between them."""
    for _ in range(20):
        fn(*args)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / calls * 1e6


def print_profile(fn: Callable, *args, calls: int = 2000, top: int = 25) -> None:
    """cProfile of ``calls`` back-to-back eager calls of ``fn(*args)``, the ``top`` entries by own time: where a
    call's host time goes."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn(*args)
    prof.disable()
    torch.cuda.synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def enqueue_us(fn: Callable, *args, calls: int = 20) -> float:
    """Host microseconds to issue one call of ``fn(*args)`` onto an idle GPU: median over ``calls``, synchronizing
    before each. Unlike :func:`host_us` this stays the host's own cost when a call's GPU time exceeds it: back-to-back
    calls would fill CUDA's launch queue and make the host wait for the GPU. Valid while one call launches fewer
    kernels than the queue holds (about a thousand)."""
    for _ in range(3):
        fn(*args)
    samples = []
    for _ in range(calls):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - t0)
    torch.cuda.synchronize()
    return sorted(samples)[len(samples) // 2] * 1e6


def cuda_kernels(fn: Callable, *args) -> int:
    """GPU activities (kernels, memsets, copies) that one call of ``fn(*args)`` issues, as the profiler records
    them: what a call costs the host in launches, next to its time."""
    from torch.profiler import ProfilerActivity, profile

    fn(*args)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn(*args)
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def environment() -> dict:
    """Stamp results with the machine and versions they were measured on."""
    import triton

    env = {"torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env |= {
            "gpu": p.name,
            "capability": f"{p.major}.{p.minor}",
            "sms": p.multi_processor_count,
            "cuda": torch.version.cuda,
        }
    return env


@dataclass
class Table:
    name: str
    baseline: str
    unit: str = "ms"
    rows: list[dict] = field(default_factory=list)

    def add(self, case: dict, times: dict[str, float], **extra) -> None:
        """One case: ``times`` maps method name to milliseconds (``baseline`` among them); ``extra`` is free data
        (errors, TFLOP/s, memory) kept in JSON and printed after the ratios."""
        if self.baseline not in times:
            raise ValueError(f"times: the baseline {self.baseline!r} must be measured in the same run")
        self.rows.append({"case": case, "times": times, "extra": extra})
        # progress, in case a later row dies or a device call's time limit cuts the run before the tables print
        base = times[self.baseline]
        ratios = " ".join(f"{k}={base / v:.2f}" for k, v in times.items() if k != self.baseline and v > 0)
        print(f"  {' '.join(f'{k}={v}' for k, v in case.items())}: {ratios}", flush=True)

    def methods(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rows:
            seen.update(dict.fromkeys(r["times"]))
        return list(seen)

    def markdown(self) -> str:
        if not self.rows:
            return f"### {self.name}\n(no rows)\n"
        keys = list(self.rows[0]["case"])
        methods = self.methods()
        extras = list(dict.fromkeys(k for r in self.rows for k in r["extra"]))
        head = [*keys, *(f"{m} ms" for m in methods), *(f"{m} ×" for m in methods if m != self.baseline), *extras]
        lines = [
            f"### {self.name} (× = {self.baseline} time / method time; > 1 is faster)",
            "| " + " | ".join(head) + " |",
        ]
        lines.append("|" + "---|" * len(head))
        for r in self.rows:
            t = r["times"]
            cells = [str(r["case"][k]) for k in keys]
            cells += [f"{t[m]:.4g}" if m in t else "—" for m in methods]
            cells += [f"{t[self.baseline] / t[m]:.2f}" if m in t else "—" for m in methods if m != self.baseline]
            cells += [_fmt(r["extra"].get(k)) for k in extras]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def time_ms(fn: Callable, *arg_sets: Sequence, graph: bool = True, eager_fallback: bool = True) -> float:
    """Median milliseconds of ``fn(*args)``, cycling through ``arg_sets`` so inputs that fit in L2 are not
    re-read from cache. ``graph=True`` times CUDA-graph replays of ``fn`` itself (warmed up, then captured on a
    side stream), so launch overhead (Python, Triton's launcher) does not hide small kernels; methods that cannot
    be captured fall back to ``do_bench``, or return NaN with ``eager_fallback=False`` (for a table whose column
    says "CUDA graph", an eager time there would be mislabelled)."""
    import triton.testing

    sets = itertools.cycle(arg_sets or [()])
    call = lambda: fn(*next(sets))
    call()  # warm-up: compile, autotune, build
    torch.cuda.synchronize()
    if graph:
        try:
            return float(triton.testing.do_bench_cudagraph(call, rep=50, return_mode="median"))
        except Exception as e:  # capture can fail for host-syncing methods: time them without a graph
            then = "timing eagerly" if eager_fallback else "NaN"
            print(f"  (no CUDA graph for {getattr(fn, '__name__', fn)}: {type(e).__name__}; {then})")
            torch.cuda.synchronize()
            if not eager_fallback:
                return float("nan")
    return float(triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median"))


class Bench:
    """Collects tables for one run; writes ``results.json``, ``results.md`` and one PNG per table to ``out_dir``."""

    def __init__(self, out_dir: Path, *, quick: bool = False):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.quick = quick  # fewer cases, for a smoke run
        self.tables: list[Table] = []
        self.env = environment()

    def table(self, name: str, baseline: str) -> Table:
        t = Table(name, baseline)
        self.tables.append(t)
        return t

    def time(self, fn: Callable, *arg_sets: Sequence, graph: bool = True, eager_fallback: bool = True) -> float:
        """:func:`time_ms` (kept as a method: every benchmark module times through its ``Bench``)."""
        return time_ms(fn, *arg_sets, graph=graph, eager_fallback=eager_fallback)

    def write(self) -> str:
        md = "\n".join(t.markdown() for t in self.tables)
        (self.out_dir / "results.md").write_text(md)
        data = {"env": self.env, "tables": [t.__dict__ for t in self.tables]}
        (self.out_dir / "results.json").write_text(json.dumps(data, indent=1, default=str))
        self._plot()
        return md

    def _plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib not installed: no plots")
            return
        for t in self.tables:
            methods = [m for m in t.methods() if m != t.baseline]
            if not t.rows or not methods:
                continue
            labels = [",".join(f"{v}" for v in r["case"].values()) for r in t.rows]
            fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(labels) * len(methods)), 4))
            w = 0.8 / len(methods)
            for i, m in enumerate(methods):
                ys = [r["times"][t.baseline] / r["times"][m] if m in r["times"] else 0 for r in t.rows]
                ax.bar([x + i * w for x in range(len(labels))], ys, w, label=m)
            ax.axhline(1.0, color="k", lw=0.8)
            ax.set_xticks([x + 0.4 - w / 2 for x in range(len(labels))], labels, rotation=45, ha="right", fontsize=7)
            ax.set_ylabel(f"speed-up over {t.baseline}")
            ax.set_title(f"{t.name} — {self.env.get('gpu', 'cpu')}", fontsize=9)
            ax.legend(fontsize=7)
            fig.tight_layout()
            fig.savefig(self.out_dir / f"{_slug(t.name)}.png", dpi=110)
            plt.close(fig)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s).strip("_")[:60]
