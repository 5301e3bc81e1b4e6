"""Whole W4A8 linear layers (``W4A8Linear``: one ``lowbit::w4a8_linear`` call, activation quantization included) vs
bf16 ``nn.Linear``, per-channel, group 128 and group 128 as integer multipliers of a channel scale (``g128 mult``),
at decode (M = 1, 16) and prefill (M = 4096) sizes.

Per row: the CUDA-graph time of each method (median of replays, rotating inputs beyond L2), ratios against bf16
in the same run, torch's int4 weight-only GEMV (``aten._weight_int4pack_mm``, tinygemm, group 128) at M = 1, the
fraction of the int4 memory floor (packed weight bytes / copy bandwidth measured now) at M <= 16, and every decode
kernel config forced (``gemv``/``quant+gemv``/``quant+decode``/``cuda``/``quant+cuda <config>`` columns: Triton's
dp4a GEMV, its tensor-core GEMV, the CUDA GEMV quantizing x itself or after the quantizer) so one run picks the
dispatch table's decode rows (``LOWBIT_BENCH_W4A8_CANDIDATES`` names a subset). Before timing, each method is
checked against the exact definition (per-token int8 quantization, exact integer dots, float64 scales). A second
table: host microseconds per eager call (no CUDA graph), next to bf16 ``nn.Linear``.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

import lowbit_flex  # noqa: F401
from benchmarks.bench_s8s4_linear import SHAPES_KN, copy_bandwidth_gbps
from benchmarks.harness import Bench, host_us
from lowbit_flex.nn import W4A8Linear
from lowbit_flex.quant import unpack_int4

MS = [1, 4, 16, 4096]
_ENV_MS = "LOWBIT_BENCH_W4A8_M"  # e.g. "1,4,16": time only these M (a decode-only sweep)
# e.g. "gemv dp4a_4x16x1024,quant+cuda mma_n1k8_pf0": time only these decode candidates ("" : none), by label
_ENV_CANDIDATES = "LOWBIT_BENCH_W4A8_CANDIDATES"
_ROTATE_BYTES = 256 << 20


def _exact(x, layer: W4A8Linear):
    """float64 definition of the layer on x (M, K): quantize per row as the op does, exact integer dots."""
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(x.cpu())
    K, N = layer.in_features, layer.out_features
    groups = 1 if layer.weight_scale.dim() == 1 else layer.weight_scale.shape[1]
    w = unpack_int4(layer.weight.cpu()).double().view(N, groups, K // groups)
    xg = xq.double().view(-1, groups, K // groups)
    dots = torch.einsum("mgk,ngk->mng", xg, w)
    # The error allowance scales with the sum of |products| (what any summation order, split-K included, rounds),
    # not with |dot|: a dot that cancels to 0 exactly is still summed from nonzero float32 partials.
    abs_dots = torch.einsum("mgk,ngk->mng", xg.abs(), w.abs())
    scales = layer.weight_scale.cpu().double().view(1, N, groups) * xs.double().view(-1, 1, 1)
    return (dots * scales).sum(-1), (abs_dots * scales).sum(-1), groups


def _check(out, exact) -> str:
    """``out`` against ``_exact``'s result (computed once per layer and input: it is the slow part on large layers)."""
    exact, mag, groups = exact
    bound = exact.abs() * 2.0**-7 + (groups + 4) * 2.0**-24 * mag + 1e-30
    ratio = float(((out.double().cpu() - exact).abs() / bound).max())
    return "ok" if ratio <= 1.0 else f"FAIL {ratio:.3g}"


def _tinygemm(w: torch.Tensor, group: int = 128):
    """torch's int4 weight-only GEMV: asymmetric 4-bit codes (q + 8) with per-group scale and zero, packed for
    ``_weight_int4pack_mm``. Returns (fn, packed, scales_and_zeros) or None if this torch lacks it."""
    N, K = w.shape
    wg = w.float().view(N, K // group, group)
    scale = (wg.abs().amax(-1, keepdim=True) / 7).clamp_min(1e-8)
    q = (torch.round(wg / scale).clamp(-8, 7) + 8).to(torch.int32).view(N, K)
    try:
        packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), 8)
    except (RuntimeError, AttributeError) as e:
        print(f"  tinygemm unavailable: {type(e).__name__}: {e}")
        return None
    # tinygemm dequantizes (q - 8) * scale + zero, with scales_and_zeros (K // group, N, 2).
    sz = torch.stack([scale.view(N, -1).t(), torch.zeros_like(scale.view(N, -1).t())], dim=-1).bfloat16().contiguous()
    return lambda x, p, s: torch.ops.aten._weight_int4pack_mm(x, p, group, s), packed, sz


def _quantized(x):
    from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

    xq, xs = quantize_int8_rowwise_triton(x)
    return xq, xs.view(-1)


def _ms() -> list[int]:
    return [int(m) for m in os.environ[_ENV_MS].split(",")] if os.environ.get(_ENV_MS) else MS


def _decode_candidates(M: int) -> dict:
    """Every decode kernel config that can take M rows, as ``f(x, layer)`` (so one run picks the dispatch table's
    decode rows): the dp4a GEMV quantizing x itself (``gemv``) or after the quantizer kernel (``quant+gemv``), the
    Triton tensor-core GEMV after the quantizer (its fused form lost everywhere in the H200 run of 2026-12-01), and
    the CUDA GEMV quantizing x itself (``cuda``, M <= 8) or after the quantizer (``quant+cuda``)."""
    from lowbit_flex.kernels.s8s4_decode import DECODE_CONFIGS, s8s4_decode_triton
    from lowbit_flex.kernels.s8s4_gemv import GEMV_CONFIGS, GEMV_MAX_M, s8s4_gemv_triton
    from lowbit_flex.kernels.w4a8_gemv_cuda import GEMV_CUDA_CONFIGS, MAX_FUSED_M, s8s4_gemv_cuda
    from lowbit_flex.kernels.w4a8_gemv_cuda import MAX_M as CUDA_MAX_M

    out = {}
    if M <= GEMV_MAX_M:
        for name, cfg in GEMV_CONFIGS.items():
            out[f"gemv {name}"] = lambda x, m, cfg=cfg: s8s4_gemv_triton(
                x, None, m.weight, m.weight_scale, None, torch.bfloat16, cfg
            )
            out[f"quant+gemv {name}"] = lambda x, m, cfg=cfg: s8s4_gemv_triton(
                *_quantized(x), m.weight, m.weight_scale, None, torch.bfloat16, cfg
            )
    for name, cfg in DECODE_CONFIGS.items():
        out[f"quant+decode {name}"] = lambda x, m, cfg=cfg: s8s4_decode_triton(
            *_quantized(x), m.weight, m.weight_scale, None, torch.bfloat16, cfg
        )
    if torch.cuda.get_device_capability() >= (8, 0) and M <= CUDA_MAX_M:  # the CUDA GEMV (needs the library)
        for name in GEMV_CUDA_CONFIGS:
            if M <= MAX_FUSED_M:  # (quantized first instead where M * K is over the kernel's staging limit)
                out[f"cuda {name}"] = lambda x, m, name=name: s8s4_gemv_cuda(
                    x, None, m.weight, m.weight_scale, None, torch.bfloat16, name
                )
            out[f"quant+cuda {name}"] = lambda x, m, name=name: s8s4_gemv_cuda(
                *_quantized(x), m.weight, m.weight_scale, None, torch.bfloat16, name
            )
    keep = os.environ.get(_ENV_CANDIDATES)
    return out if keep is None else {k: v for k, v in out.items() if k in keep.split(",")}


def run(bench: Bench) -> None:
    from lowbit_flex.kernels.s8s4_dispatch import rule_for

    bw = copy_bandwidth_gbps()
    print(f"  copy bandwidth {bw:.0f} GB/s")
    table = bench.table("W4A8Linear whole layer (bf16 in/out, quantization included)", baseline="bf16 nn.Linear")
    host = bench.table("host us per eager call (no CUDA graph), M = 1", baseline="bf16 nn.Linear")
    torch.set_grad_enabled(False)
    for K, N in SHAPES_KN[:2] if bench.quick else SHAPES_KN:
        lin = nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16)
        # "g128 mult": group 128 as integer multipliers of a channel scale (W4A8Config(128, group_multipliers=True))
        layers = {
            "per-channel": W4A8Linear.from_linear(lin),
            "g128": W4A8Linear.from_linear(lin, 128),
            "g128 mult": W4A8Linear.from_linear(lin, 128, group_multipliers=True),
        }
        tiny = _tinygemm(lin.weight.detach())
        for M in [1, 16] if bench.quick else _ms():
            n = max(1, min(16, math.ceil(_ROTATE_BYTES / (M * K * 2 + N * K * 2))))
            xs = [torch.randn(M, K, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
            lins = [lin] + [nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16) for _ in range(n - 1)]
            times = {"bf16 nn.Linear": bench.time(lambda x, m: m(x), *[(xs[i], lins[i]) for i in range(n)])}
            extra: dict = {}
            for kind, layer in layers.items():
                has_mult = layer.weight_group_mult is not None
                copies = [layer] + [W4A8Linear.from_linear(lins[i], layer.group_size, has_mult) for i in range(1, n)]
                exact = _exact(xs[0], layer)
                extra[f"check {kind}"] = _check(layer(xs[0]), exact)
                times[f"w4a8 {kind}"] = bench.time(lambda x, m: m(x), *[(xs[i], copies[i]) for i in range(n)])
                rule = rule_for(xs[0].device, layer.weight_scale, M, N, K, has_mult)
                extra[f"backend {kind}"] = f"{rule.backend.value} {rule.config}"
                if M <= 16:
                    extra[f"floor frac {kind}"] = (N * K // 2) / (bw * 1e9) * 1e3 / times[f"w4a8 {kind}"]
                    # the decode kernels read the float scales: g128 mult's are g128's (timed there)
                    for label, f in ({} if has_mult else _decode_candidates(M)).items():
                        extra[f"check {label} {kind}"] = _check(f(xs[0], layer), exact)
                        times[f"{label} {kind}"] = bench.time(f, *[(xs[i], copies[i]) for i in range(n)])
            if M == 1 and tiny is not None:
                fn, packed, sz = tiny
                ref = xs[0].float() @ lin.weight.float().t()
                extra["tinygemm rel err"] = float((fn(xs[0], packed, sz).float() - ref).norm() / ref.norm())
                times["tinygemm g128"] = bench.time(fn, *[(xs[i], packed.clone(), sz) for i in range(n)])
                for kind in layers:
                    extra[f"w4a8 {kind} / tinygemm"] = times["tinygemm g128"] / times[f"w4a8 {kind}"]
            table.add({"K": K, "N": N, "M": M}, times, **extra)
            if M == 1:
                x = xs[0]
                us = {"bf16 nn.Linear": host_us(lin, x)}
                us |= {f"w4a8 {kind}": host_us(layer, x) for kind, layer in layers.items()}
                # The op alone (no module call): what the layer adds on top of the op's own dispatch.
                m = layers["g128"]
                us["op w4a8_linear g128"] = host_us(
                    lambda x, m=m: torch.ops.lowbit.w4a8_linear(x, m.weight, m.weight_scale, m.bias), x
                )
                host.add(
                    {"K": K, "N": N}, {k: v * 1e-3 for k, v in us.items()}, **{f"{k} us": v for k, v in us.items()}
                )
