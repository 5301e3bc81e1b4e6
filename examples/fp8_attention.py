"""fp8 / int8 attention in one line: speed and error against bf16 SDPA.

python examples/fp8_attention.py              # GPU: times lowbit_attention vs SDPA; CPU: a tiny exact run
python examples/fp8_attention.py --accuracy   # the accuracy table of docs/fp8_attention.md (CPU, float64)
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from lowbit_flex import quantize_fp8
from lowbit_flex.attention import fp8_flex_attention, lowbit_attention
from lowbit_flex.attention.lowbit_attention import quantize_attention_inputs
from lowbit_flex.quant import dequantize
from lowbit_flex.testing import rel_error


def _inputs(B, H, L, D, device, outliers=False, dtype=torch.bfloat16):
    q, k, v = (torch.randn(B, H, L, D, device=device) for _ in range(3))
    if outliers:  # 4 channels of K with a large per-(head, channel) offset, as in trained LLMs' keys
        ch = [3, D // 3, D // 2 + 1, D - 5]
        k[..., ch] = k[..., ch] * 4 + 30 * torch.sign(torch.randn(B, H, 1, len(ch), device=device))
    return q.to(dtype), k.to(dtype), v.to(dtype)


def speed(device: str) -> None:
    B, H, L, D = (4, 16, 8192, 128) if device == "cuda" else (1, 2, 256, 64)
    q, k, v = _inputs(B, H, L, D, device)
    ref = F.scaled_dot_product_attention(q[:1, :2].double(), k[:1, :2].double(), v[:1, :2].double(), is_causal=True)
    rows = [("SDPA bf16", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))]
    for qk, pv in (("fp8", "fp8"), ("int8", "fp8"), ("int8", "fp16")):
        fn = lambda qk=qk, pv=pv: lowbit_attention(q, k, v, qk=qk, pv=pv, causal=True)
        rows.append((f"lowbit_attention {qk}/{pv}", fn))
    print(f"B={B} H={H} L={L} D={D} causal, {torch.cuda.get_device_name() if device == 'cuda' else 'CPU reference'}")
    for name, fn in rows:
        err = rel_error(fn()[:1, :2], ref)
        if device == "cuda":
            import triton.testing

            ms = triton.testing.do_bench(fn, return_mode="median")
            print(f"  {name:24s} {ms:7.3f} ms   rel. error vs float64 {err:.2e}")
        else:
            print(f"  {name:24s} rel. error vs float64 {err:.2e}")


def _attention_f64(q, k, v, causal=False):
    return F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=causal)


def accuracy(B=1, H=4, L=1024, D=128) -> None:
    """Relative error vs float64 attention on the unquantized inputs, CPU, for each format (markdown table)."""
    print("| path | randn | K outlier channels |")
    print("|---|---|---|")
    data = {name: _inputs(B, H, L, D, "cpu", name == "outliers", torch.float32) for name in ("randn", "outliers")}
    refs = {name: _attention_f64(*qkv) for name, qkv in data.items()}

    def row(label, fn):
        print(f"| {label} | " + " | ".join(f"{rel_error(fn(*data[n]), refs[n]):.2e}" for n in data) + " |")

    for g in ("tensor", "head", "token", "block"):

        def inputs_only(q, k, v, g=g):  # q/k/v rounded to e4m3 with granularity g, everything else exact
            (q8, qs), (k8, ks) = quantize_fp8(q, g), quantize_fp8(k, g)
            v8, vs = quantize_fp8(v, "tensor" if g == "tensor" else "head")
            vg = "tensor" if g == "tensor" else "head"
            return _attention_f64(dequantize(q8, qs, g), dequantize(k8, ks, g), dequantize(v8, vs, vg))

        row(f"e4m3 q/k/v, {g} scales, exact softmax/PV", inputs_only)
    for g in ("tensor", "block"):
        row(
            f"fp8_flex_attention, {g} scales (fp8 output; CPU emulation)",
            lambda q, k, v, g=g: fp8_flex_attention(q, k, v, granularity=g),
        )
    for dt in ("fp8", "int8"):
        for smooth in (False, True):
            label = f"lowbit::fp8_attention, {dt} QKᵀ per 128-token block{', smooth-K' if smooth else ''}, P e4m3"
            row(
                label,
                lambda q, k, v, dt=dt, sm=smooth: torch.ops.lowbit.fp8_attention(
                    *quantize_attention_inputs(q, k, v, dt, sm), out_dtype=torch.float32
                ),
            )
    for dt in ("fp8", "int8"):
        row(
            f"lowbit::fp8_attention, {dt} QKᵀ, smooth-K, P and V bf16 (`lowbit_attention(..., qk={dt!r}, pv='fp16')`)",
            lambda q, k, v, dt=dt: torch.ops.lowbit.fp8_attention(
                *quantize_attention_inputs(q, k, v.bfloat16(), dt, pv="fp16"), out_dtype=torch.float32
            ),
        )
    row(
        "lowbit::fp8_attention, fp8, smooth-K, fp16 PV accumulation",
        lambda q, k, v: torch.ops.lowbit.fp8_attention(
            *quantize_attention_inputs(q, k, v, "fp8"), out_dtype=torch.float32, pv_fp16_accum=True
        ),
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--accuracy", action="store_true")
    args = p.parse_args()
    if args.accuracy:
        accuracy()
    else:
        speed("cuda" if torch.cuda.is_available() else "cpu")
