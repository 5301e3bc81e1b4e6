"""Llama-2-7B-shaped greedy decoding (batch 1, static KV cache, CUDA graphs): bf16 vs W4A8 tokens/s.

Imports ``examples/llama_w4a8_decode.py`` (random weights, no downloads). About a minute per model on an H100:
compile + CUDA-graph capture during warm-up, then 64 timed tokens (16 with ``--quick``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from benchmarks.harness import Bench

_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "llama_w4a8_decode.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("llama_w4a8_decode", _EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


def run(bench: Bench) -> None:
    example = _load_example()
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
