"""SAM ViT-B image encoder with the fused rel-pos attention op vs SAM's own attention and broadcast-add SDPA.

    python -m examples.sam_image_encoder            # CUDA: ViT-B, bf16; CPU: a tiny config in float32

Compares the encoder output of each attention implementation against the same encoder run in float64 (SDPA with
the bias as attn_mask; max abs / relative error), then on a GPU reports images/s at batch 1, 8, 32 under
``torch.compile``. The model is in ``examples/sam_vit.py``; ``benchmarks/bench_sam_encoder.py`` reuses both and
adds CUDA-graph timings.
"""

from __future__ import annotations

import argparse
import copy

import torch

from examples.sam_vit import TINY, VIT_B, AttnImpl, EncoderConfig, ImageEncoderViT


def compare(
    model: ImageEncoderViT, cfg: EncoderConfig, dtype: torch.dtype, batch: int, impls: list[AttnImpl]
) -> dict[str, dict[str, float]]:
    """Error of each implementation (in ``dtype``) against the float64 encoder with SDPA + bias, same weights."""
    device = next(model.parameters()).device
    x = torch.randn(batch, 3, cfg.img_size, cfg.img_size, device=device)
    with torch.no_grad():
        ref = copy.deepcopy(model).double().set_attention(AttnImpl.SDPA_BIAS)(x.double())
        low = copy.deepcopy(model).to(dtype)
        errors = {}
        for impl in impls:
            out = low.set_attention(impl)(x.to(dtype)).double()
            errors[impl.value] = {
                "max_abs": float((out - ref).abs().max()),
                "rel": float((out - ref).norm() / ref.norm()),
            }
    return errors


def images_per_second(model: ImageEncoderViT, cfg: EncoderConfig, impl: AttnImpl, batch: int) -> float:
    """Throughput of ``torch.compile(model)`` (CUDA; ``model`` already in its dtype), median of CUDA-timed runs."""
    import triton.testing

    dtype = next(model.parameters()).dtype
    compiled = torch.compile(model.set_attention(impl), dynamic=False)
    x = torch.randn(batch, 3, cfg.img_size, cfg.img_size, device="cuda", dtype=dtype)
    with torch.no_grad():
        compiled(x)  # compile outside the timing
        ms = triton.testing.do_bench(lambda: compiled(x), warmup=5, rep=50, return_mode="median")
    return batch / (ms * 1e-3)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batches", type=int, nargs="*", default=[1, 8, 32])
    args = p.parse_args(argv)
    on_gpu = args.device == "cuda"
    cfg, dtype = (VIT_B, torch.bfloat16) if on_gpu else (TINY, torch.float32)
    model = ImageEncoderViT(cfg).to(args.device).eval()
    impls = [AttnImpl.FUSED, AttnImpl.SDPA_BIAS, AttnImpl.SAM_MATERIALISED]
    print(f"{'ViT-B' if on_gpu else 'tiny'} encoder, {dtype}, error against the float64 encoder:")
    for name, e in compare(model, cfg, dtype, 1, impls).items():
        print(f"  {name:48s} max abs {e['max_abs']:.3e}  rel {e['rel']:.3e}")
    if not on_gpu:
        return
    model = model.to(dtype)
    print("images/s under torch.compile:")
    for batch in args.batches:
        rates = {impl: images_per_second(model, cfg, impl, batch) for impl in impls}
        fused = rates[AttnImpl.FUSED]
        cells = "  ".join(f"{impl.name.lower()} {r:8.1f}" for impl, r in rates.items())
        print(
            f"  batch {batch:3d}: {cells}  fused / sdpa_bias {fused / rates[AttnImpl.SDPA_BIAS]:.2f}x"
            f"  fused / sam_materialised {fused / rates[AttnImpl.SAM_MATERIALISED]:.2f}x"
        )


if __name__ == "__main__":
    main()
