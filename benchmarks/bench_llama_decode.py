"""Llama-2-7B-shaped greedy decoding (batch 1, static KV cache, CUDA graphs): bf16 vs W4A8 tokens/s.

Imports ``examples/llama_w4a8_decode.py`` (random weights, no downloads). About a minute per model on an H100:
compile + CUDA-graph capture during warm-up, then 64 timed tokens (16 with ``--quick``).
"""

from __future__ import annotations

from benchmarks.harness import Bench
from examples import llama_w4a8_decode as example


def run(bench: Bench) -> None:
    table = bench.table("Llama-2-7B decode, batch 1 (ms per token)", baseline="bf16")
    n_new = 16 if bench.quick else 64
    r = example.compare(example.LLAMA2_7B, "cuda", n_new=n_new, compile=True)
    times = {"bf16": 1e3 / r["bf16 tok/s"], "w4a8": 1e3 / r["w4a8 tok/s"]}
    table.add(
        {"model": "llama-2-7b dims", "tokens": n_new},
        times,
        bf16_tok_s=r["bf16 tok/s"],
        w4a8_tok_s=r["w4a8 tok/s"],
        same_tokens=r["same tokens"],
    )
