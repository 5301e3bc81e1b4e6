"""fp8 / int8 attention vs bf16 SDPA and FlexAttention (B=4, H=16, D=128), plus fp8 FlexAttention descale variants.

Table 1 (baseline: bf16 SDPA, default backend: flash or cuDNN): ``lowbit_attention`` (one ``lowbit::lowbit_attention``
call: bf16 in, bf16 out, quantization included) for qk fp8/int8 and pv fp8/fp16 (``pv16``: the accurate mode), the
attention kernel alone on Q/K/V quantized beforehand, compiled FlexAttention bf16 and
``fp8_flex_attention``; relative error of each vs float64 on a slice (batch 0, heads 0-1); TFLOP/s against the fp8
tensor-core rate, taken as 2x the bf16 8192³ matmul rate measured in the same run.
Table 2: the Q/K/V quantization pass against a plain copy (``clone``) of the same tensors.
Table 3 (baseline: fp8 FlexAttention with a float ``scale=``): the same kernel with the descale in a tensor-reading
score_mod, and the number of recompiles each needs over 10 different scale values.
Table 4: the attention kernel's TMA launch configs against the rule: the Triton tiles, the occupancy configs (more
programs per SM: 64-key steps, register caps) and the Gluon kernel's ring sizes.
Table 5: host µs per eager call at a tiny shape, next to SDPA.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

import lowbit_flex  # noqa: F401
from benchmarks.harness import Bench, selected_names
from lowbit_flex.attention import fp8_flex_attention, lowbit_attention
from lowbit_flex.score_mods import fp8_descale
from lowbit_flex.testing import rel_error

B, H, D = 4, 16, 128
_TABLES = ("e2e", "quant", "flex", "configs", "host")  # tables 1-5
_ENV_TABLES = "LOWBIT_BENCH_ATTN_TABLES"  # e.g. "e2e,configs": only these tables
_ENV_LS = "LOWBIT_BENCH_ATTN_L"  # e.g. "1024,16384": only these sequence lengths


def _attention_flops(L: int, causal: bool) -> float:
    return 4.0 * B * H * L * L * D / (2 if causal else 1)


def _slice_error(out: torch.Tensor, ref64: torch.Tensor) -> float:
    return rel_error(out[:1, :2], ref64)


def _peak_fp8_tflops(bench: Bench) -> tuple[float, float]:
    n = 8192
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    bf16 = 2.0 * n**3 / (bench.time(torch.mm, (a, b)) * 1e-3) / 1e12
    return bf16, 2.0 * bf16  # datasheet: fp8 / int8 dense tensor cores run at 2x the bf16 rate


def _prequantized(q, k, v, qk: str, pv: str):
    """The attention kernel's arguments, quantized beforehand by the op's first launch (an e4m3 v with its keys in
    the P·V MMA's order, as the op writes it). Pass them with :func:`_kernel`."""
    from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton
    from lowbit_flex.ops.lowbit_attention import QK_FORMATS

    v_fp8 = pv == "fp8"
    q8, qs, k8, ks, v8, vs = quantize_qkv_triton(q, k, v, QK_FORMATS[qk], True, v_fp8, v_fp8)
    return (q8, k8, v8 if v_fp8 else v, qs, ks, vs)


def _kernel(causal: bool, pv: str, config=None):
    """The attention kernel on :func:`_prequantized`'s arguments."""
    from lowbit_flex.kernels.fp8_attention import fp8_attention_triton

    mma = pv == "fp8"
    return lambda *a: fp8_attention_triton(*a, causal, None, torch.bfloat16, False, config=config, v_mma_key_order=mma)


def _case(bench: Bench, table, flex, L: int, causal: bool, with_flex: bool, bf16_tflops: float, fp8_tflops: float):
    from torch.nn.attention.flex_attention import create_block_mask

    q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref64 = F.scaled_dot_product_attention(q[:1, :2].double(), k[:1, :2].double(), v[:1, :2].double(),
                                           is_causal=causal)  # fmt: skip
    methods = {"SDPA bf16": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal), (q, k, v))}
    for qk, pv in (("fp8", "fp8"), ("int8", "fp8"), ("fp8", "fp16"), ("int8", "fp16")):
        name = f"{qk}" + (" pv16" if pv == "fp16" else "")
        methods[f"lowbit {name}"] = (
            lambda q, k, v, qk=qk, pv=pv: lowbit_attention(q, k, v, qk=qk, pv=pv, causal=causal),
            (q, k, v),
        )
        methods[f"kernel {name}"] = (_kernel(causal, pv), _prequantized(q, k, v, qk, pv))
    if with_flex:
        mask = create_block_mask(lambda b, h, i, j: i >= j, None, None, L, L) if causal else None
        methods["flex bf16"] = (lambda q, k, v: flex(q, k, v, block_mask=mask), (q, k, v))
        methods["fp8_flex_attention"] = (lambda q, k, v: fp8_flex_attention(q, k, v, block_mask=mask), (q, k, v))
    times, extra = {}, {}
    for name, (fn, args) in methods.items():
        extra[f"err {name}"] = _slice_error(fn(*args), ref64)  # correctness first
        times[name] = bench.time(fn, args)
    flops = _attention_flops(L, causal)
    for name in ("SDPA bf16", "lowbit fp8", "lowbit int8 pv16", "kernel fp8", "kernel int8", "kernel int8 pv16"):
        extra[f"TFLOP/s {name}"] = flops / (times[name] * 1e-3) / 1e12
    extra["% fp8 peak (kernel fp8)"] = 100 * extra["TFLOP/s kernel fp8"] / fp8_tflops
    extra["bf16 mm TFLOP/s"] = bf16_tflops
    table.add({"L": L, "causal": causal}, times, **extra)


def _quantization_table(bench: Bench, Ls) -> None:
    """The one Q/K/V pass (fp8 q, k and v; int8 q and k, the accurate mode) against cloning the same tensors: a copy
    reads and writes 2 bytes per element, the pass reads 2 and writes 1."""
    from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton

    table = bench.table(f"Q/K/V quantization vs a copy, B={B} H={H} D={D} bf16", baseline="clone q, k, v")
    for L in Ls:
        q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        quantize = lambda q, k, v, qk, v_fp8: quantize_qkv_triton(q, k, v, qk, True, v_fp8)
        cases = {  # name: (fn, args, bytes moved per element of k)
            "clone q, k, v": (lambda q, k, v: (q.clone(), k.clone(), v.clone()), (q, k, v), 12),
            "clone q, k": (lambda q, k: (q.clone(), k.clone()), (q, k), 8),
            "quantize q, k, v (fp8, fp8)": (quantize, (q, k, v, torch.float8_e4m3fn, True), 9),
            "quantize q, k (int8, pv16)": (quantize, (q, k, v, torch.int8, False), 6),
        }
        times = {n: bench.time(fn, args) for n, (fn, args, _) in cases.items()}
        gbs = {f"GB/s {n}": k.numel() * c[2] / (times[n] * 1e6) for n, c in cases.items()}
        table.add({"L": L}, times, **gbs)


def _flex_descale_table(bench: Bench, L: int):
    """Tensor descale (score_mod) vs float ``scale=`` on the same per-tensor fp8 inputs, and their recompiles."""
    from torch._dynamo.testing import CompileCounterWithBackend
    from torch.nn.attention.flex_attention import flex_attention

    table = bench.table(f"fp8 FlexAttention descale, B={B} H={H} L={L} D={D}", baseline="flex fp8 scale=float")
    q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref64 = F.scaled_dot_product_attention(q[:1, :2].double(), k[:1, :2].double(), v[:1, :2].double())
    (q8, qs), (k8, ks), (v8, v_scale) = (torch.ops.lowbit.quantize_fp8(t) for t in (q, k, v))  # per tensor
    sm = 1.0 / math.sqrt(D)
    counters = {"tensor": CompileCounterWithBackend("inductor"), "float": CompileCounterWithBackend("inductor")}
    flex_t = torch.compile(flex_attention, backend=counters["tensor"], dynamic=False)
    flex_f = torch.compile(flex_attention, backend=counters["float"], dynamic=False)
    by_tensor = lambda q8, k8, v8, qs, ks: flex_t(q8, k8, v8, score_mod=fp8_descale(qs, ks), scale=sm)
    descale = float(qs * ks)  # the published recipe: .item() (a host sync), outside the timed region here
    by_float = lambda q8, k8, v8: flex_f(q8, k8, v8, scale=sm * descale)
    errs = {
        "err tensor descale": _slice_error(by_tensor(q8, k8, v8, qs, ks).float() * v_scale, ref64),
        "err float scale=": _slice_error(by_float(q8, k8, v8).float() * v_scale, ref64),
    }
    times = {"flex fp8 scale=float": bench.time(by_float, (q8, k8, v8)),
             "flex fp8 tensor descale": bench.time(by_tensor, (q8, k8, v8, qs, ks))}  # fmt: skip
    base = {n: c.frame_count for n, c in counters.items()}
    for i in range(10):  # 10 scale values through the tensor descale: the compiled kernel only reads new values
        by_tensor(q8, k8, v8, qs * (0.5 + 0.1 * i), ks)
    for i in range(3):  # the float recipe: only 3 values, each may be a full FlexAttention compile (seconds)
        flex_f(q8, k8, v8, scale=sm * descale * (0.5 + 0.1 * i))
    torch.cuda.synchronize()
    recompiles = {
        "recompiles over 10 values, tensor descale": counters["tensor"].frame_count - base["tensor"],
        "recompiles over 3 values, float scale=": counters["float"].frame_count - base["float"],
    }
    table.add({"L": L}, times, **errs, **recompiles)


def _sweep_configs(qk: str, pv: str) -> list:
    """The TMA configs timed against the rule for one format pair: every Triton tile and Gluon ring for fp8/fp8 and
    int8/fp16 (the table's rows since run 40); the occupancy configs where V is e4m3 (their register caps apply only
    there). int8/fp8 (the fp8-PV format within issue 12's error target) gets the occupancy configs, the 3-stage
    64-query tile (its rule until session 55) and the Gluon rings."""
    from lowbit_flex.kernels.fp8_attention import CONFIGS, OCCUPANCY_CONFIGS

    base = [c for c in CONFIGS if c.tma and c not in OCCUPANCY_CONFIGS]
    if (qk, pv) == ("int8", "fp8"):
        base = [c for c in base if c.block_m == 64 or c.gluon]
    return [*base, *(OCCUPANCY_CONFIGS if pv == "fp8" else ())]


def _config_sweep(bench: Bench, Ls) -> None:
    """The kernel (on the one pass's Q/K/V) with each TMA config (:func:`_sweep_configs`) against ``pick_config``'s
    choice (a fixed rule, no autotuning: this table is what the rule is checked against)."""
    from lowbit_flex.kernels.fp8_attention import pick_config
    from lowbit_flex.quant.fp8 import K_BLOCK

    table = bench.table(f"fp8_attention kernel: launch configs, B={B} H={H} D={D}", baseline="rule")
    label = lambda c: (
        ("gluon ws " if c.gluon else "")
        + f"M{c.block_m}"
        + (f" N{c.block_n}" if c.block_n != K_BLOCK else "")
        + f" w{c.num_warps} s{c.num_stages}"
        + (f" r{c.maxnreg}" if c.maxnreg else "")
        + (" tma" if c.tma and not c.gluon else "")
    )
    for L in Ls:
        q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for qk, pv in (("fp8", "fp8"), ("int8", "fp8"), ("int8", "fp16")):
            args = _prequantized(q, k, v, qk, pv)
            for causal in (False, True):
                chosen = pick_config(L, pv == "fp16", qk == "int8", causal)
                times = {}
                for name, c in [("rule", chosen), *((label(c), c) for c in _sweep_configs(qk, pv))]:
                    times[name] = bench.time(_kernel(causal, pv, c), args)
                flops = _attention_flops(L, causal)
                best = min(times, key=times.get)
                table.add({"L": L, "qk/pv": f"{qk}/{pv}", "causal": causal}, times, rule=label(chosen), best=best,
                          **{"TFLOP/s best": flops / (times[best] * 1e-3) / 1e12})  # fmt: skip
        del q, k, v
        torch.cuda.empty_cache()


def _host_times(bench: Bench) -> None:
    """Host µs per eager call (no CUDA graph) at a shape whose GPU time is negligible, next to SDPA."""
    from benchmarks.harness import host_us

    table = bench.table("lowbit_attention host time per eager call (µs, in the ms columns / 1000)", "SDPA bf16")
    q, k, v = (torch.randn(1, H, 128, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    times = {"SDPA bf16": host_us(F.scaled_dot_product_attention, q, k, v),
             "lowbit fp8": host_us(lambda q, k, v: lowbit_attention(q, k, v), q, k, v),
             "lowbit int8 pv16": host_us(lambda q, k, v: lowbit_attention(q, k, v, qk="int8", pv="fp16"), q, k, v),
             "torch.ops.lowbit": host_us(torch.ops.lowbit.lowbit_attention, q, k, v)}  # fmt: skip
    table.add(
        {"shape": f"1x{H}x128x{D}"}, {m: t / 1e3 for m, t in times.items()}, **{f"{m} µs": t for m, t in times.items()}
    )


def run(bench: Bench) -> None:
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    from torch.nn.attention.flex_attention import flex_attention

    flex = torch.compile(flex_attention, dynamic=False)
    bf16_tflops, fp8_tflops = _peak_fp8_tflops(bench)
    print(f"  bf16 mm {bf16_tflops:.0f} TFLOP/s -> fp8 tensor-core rate taken as {fp8_tflops:.0f} TFLOP/s")
    Ls = [1024, 4096] if bench.quick else [1024, 4096, 8192, 16384]
    if os.environ.get(_ENV_LS):
        Ls = [int(L) for L in os.environ[_ENV_LS].split(",")]
    flex_Ls = {4096} if bench.quick else {8192}  # each FlexAttention shape is a compile: keep the run short
    tables = selected_names(_ENV_TABLES, _TABLES)
    if "e2e" in tables:
        table = bench.table(f"fp8/int8 attention, B={B} H={H} D={D} (bf16 in/out)", baseline="SDPA bf16")
        for L in Ls:
            for causal in (False, True):
                _case(bench, table, flex, L, causal, L in flex_Ls, bf16_tflops, fp8_tflops)
                torch.cuda.empty_cache()
    if "quant" in tables:
        _quantization_table(bench, Ls)
    if "flex" in tables:
        _flex_descale_table(bench, 4096 if bench.quick else 8192)
    if "configs" in tables:
        _config_sweep(bench, Ls)
    if "host" in tables:
        _host_times(bench)
