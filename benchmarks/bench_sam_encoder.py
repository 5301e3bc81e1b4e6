"""SAM ViT-B image encoder (examples/sam_vit.py), bf16, torch.compile: images/s by attention implementation."""

from __future__ import annotations

import torch

import lowbit_flex  # noqa: F401
from benchmarks.harness import Bench
from examples.sam_image_encoder import compare
from examples.sam_vit import VIT_B, AttnImpl, ImageEncoderViT


def run(bench: Bench) -> None:
    impls = [AttnImpl.SDPA_BIAS, AttnImpl.FUSED] + ([] if bench.quick else [AttnImpl.FLEX])
    model = ImageEncoderViT(VIT_B).cuda().eval()
    # Correctness first: each implementation in bf16 against the float64 materialised-bias encoder, batch 1.
    errors = compare(model, VIT_B, torch.bfloat16, 1, impls)
    model = model.to(torch.bfloat16)
    table = bench.table("SAM ViT-B image encoder (bf16, torch.compile)", baseline=AttnImpl.SDPA_BIAS.value)
    # Dynamo guards on each block's `attn.impl`: every (impl, batch) pair gets its own graph (benchmarks/run.py
    # raises the recompile limit).
    compiled = torch.compile(model, dynamic=False)
    for batch in (1, 8) if bench.quick else (1, 8, 32):
        x = torch.randn(batch, 3, VIT_B.img_size, VIT_B.img_size, device="cuda", dtype=torch.bfloat16)
        times = {}
        with torch.no_grad():
            for impl in impls:
                model.set_attention(impl)
                times[impl.value] = bench.time(compiled, (x,))
        table.add(
            {"batch": batch},
            times,
            **{f"img/s {impl.name.lower()}": batch / (times[impl.value] * 1e-3) for impl in impls},
            fused_vs_materialised=times[AttnImpl.SDPA_BIAS.value] / times[AttnImpl.FUSED.value],  # target >= 1.2 at 8
            **{f"rel_err {impl.name.lower()} (b=1)": errors[impl.value]["rel"] for impl in impls},
            **{f"max_abs {impl.name.lower()} (b=1)": errors[impl.value]["max_abs"] for impl in impls},
        )
