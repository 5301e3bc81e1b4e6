"""Llama-2-7B-shaped greedy decoding (batch 1, static KV cache): bf16 vs W4A8 per channel and group 128 and the
fp8 / fp6 / fp4 weight-only configs, with CUDA graphs (``torch.compile(mode="reduce-overhead")``) and eagerly
(every op launched from Python each token).

Imports ``examples/llama_w4a8_decode.py`` (random weights, no downloads). About a minute per compiled model on an
H100 (compile + CUDA-graph capture during warm-up), then 64 timed tokens (16 with ``--quick``).
"""

from __future__ import annotations

from benchmarks.harness import Bench
from examples import llama_w4a8_decode as example


def run(bench: Bench) -> None:
    table = bench.table("Llama-2-7B decode, batch 1 (ms per token)", baseline="bf16")
    n_new = 16 if bench.quick else 64
    for compiled in (True, False):
        r = example.compare(example.LLAMA2_7B, "cuda", n_new=n_new, compile=compiled, group_sizes=(None, 128),
                            weight_only=tuple(example.WEIGHT_ONLY))  # fmt: skip
        names = ("w4a8", "w4a8 g128", *example.WEIGHT_ONLY)
        times = {"bf16": 1e3 / r["bf16 tok/s"]} | {n: 1e3 / r[f"{n} tok/s"] for n in names}
        mode = "CUDA graphs (compiled)" if compiled else "eager"
        table.add({"model": "llama-2-7b dims", "mode": mode, "tokens": n_new}, times, **r)
