"""W4A8 GEMM (``lowbit::s8s4_linear``) vs bf16 ``torch.mm`` and ``torch._int_mm`` (W8A8), per backend and config.

For each (K, N) and M: the baselines, every Triton config and every CUTLASS config (forced), the dispatched op,
the whole linear (fused int8 activation quantization + GEMM), and the group-wise (group 128) op; the Hopper
group-wise CUTLASS configs (``cutlass_groupwise ...``, forced, weight unpack included) and every Triton config
again (``g128 triton ...``, ``g128 unpacked ...``) are timed on the g128 weights. Before timing, each
backend/config is checked on the first shape against an exact reference (integer dot products in float64, which
is exact below 2**53). At M <= 16 the table reports the fraction of the int4-weight memory floor (packed weight
bytes / copy bandwidth measured in this run) that the dispatched op reaches.
"""

from __future__ import annotations

import functools
import math
import os

import torch

import lowbit_flex  # noqa: F401
from benchmarks.harness import Bench
from lowbit_flex.quant import group_mult_scales, quantize_int4_weight, quantize_int4_weight_group_mult, unpack_int4
from lowbit_flex.quant.int4 import GROUP_MULT_INT8_MAX
from lowbit_flex.testing import w4a8_exact_f64

SHAPES_KN = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192)]
MS = [1, 16, 64, 256, 1024, 4096, 8192]
_ROTATE_BYTES = 256 << 20  # rotate input sets until the working set is well beyond the 50 MB L2
_ENV_MS = "LOWBIT_BENCH_S8S4_M"  # e.g. "1024,4096": time only these M
_ENV_METHODS = "LOWBIT_BENCH_S8S4_METHODS"  # e.g. "cutlass_groupwise,cutlass sm90": only methods with these prefixes


def _cutlass():
    """(CUTLASS_CONFIGS, supported, launcher) or None when the wrapper is not importable in this build."""
    try:
        from lowbit_flex.kernels.s8s4_cutlass import CUTLASS_CONFIGS, cutlass_s8s4_supported, s8s4_linear_cutlass
    except ImportError as e:
        print(f"  CUTLASS W4A8 wrapper not importable ({e}): CUTLASS columns are n/a")
        return None
    return CUTLASS_CONFIGS, cutlass_s8s4_supported, s8s4_linear_cutlass


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy bandwidth (read + write bytes / time), measured now."""
    import triton.testing

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = triton.testing.do_bench(lambda: dst.copy_(src), warmup=10, rep=100, return_mode="median")
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def _check(out, exact, magnitude, groups) -> tuple[bool, float]:
    """Within one bf16 ulp of the exact value plus float32 scaling error; returns (ok, worst error / bound)."""
    bound = exact.abs() * 2.0**-7 + (groups + 4) * 2.0**-24 * magnitude + 1e-30
    ratio = float(((out.double() - exact).abs() / bound).max())
    return ratio <= 1.0, ratio


def _dispatched(xq, xs, w4, ws):
    return torch.ops.lowbit.s8s4_linear(xq, xs, w4, ws, None, torch.bfloat16)


def _dispatched_mult(xq, xs, w4, ws):
    """The op given the g128 scales' integer-multiplier form too (what a ``group_multipliers`` module passes)."""
    channel, mult_t = _group_mult_t_of(ws)
    return torch.ops.lowbit.s8s4_linear(xq, xs, w4, ws, None, torch.bfloat16, mult_t, channel)


def _whole_linear_mult(x, w4, ws):
    channel, mult_t = _group_mult_t_of(ws)
    return torch.ops.lowbit.w4a8_linear(x, w4, ws, None, torch.bfloat16, mult_t, channel)


def _whole_linear(x, w4, ws):
    """What ``W4A8Linear`` runs: the fused int8 row-wise quantization kernel, then the GEMM."""
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(x)
    return torch.ops.lowbit.s8s4_linear(xq, xs, w4, ws, None, torch.bfloat16)


def _bf16_mm(x, w):
    return torch.mm(x, w.t())


def _int_mm(xq, w8t):
    return torch._int_mm(xq, w8t)


def _forced_triton(name: str):
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

    return lambda xq, xs, w4, ws: s8s4_linear_cuda(
        xq, xs, w4, ws, None, torch.bfloat16, _backend="triton", _config=name
    )


def _forced_unpacked(name: str):
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

    return lambda xq, xs, w4, ws: s8s4_linear_cuda(
        xq, xs, w4, ws, None, torch.bfloat16, _backend="triton_unpacked", _config=name
    )


def _forced_cutlass_groupwise(name: str):
    """The Hopper group-wise CUTLASS kernel through the op's CUDA path: the per-call int4 -> int8 unpack included,
    as for the ``unpacked`` Triton kernel."""
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

    return lambda xq, xs, w4, ws: s8s4_linear_cuda(
        xq, xs, w4, ws, None, torch.bfloat16, _backend="cutlass_sm90_groupwise", _config=name
    )


# id(g128 float scales) -> (those scales, channel scale, int8 multipliers (N, groups)) that
# quantize_int4_weight_group_mult made with them: what a group_multipliers module holds next to its float scales.
# (The float scales alone do not give them back: a row's largest multiplier may be 15 or 16.)
_GROUP_MULT: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _group_mult_of(ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scales, channel, mult = _GROUP_MULT[id(ws)]
    assert scales is ws, "g128 scales without their multipliers"
    return channel, mult


@functools.cache
def _group_mult_t_of(ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    channel, mult = _group_mult_of(ws)
    return channel, mult.t().contiguous()  # (groups, N): the Hopper W4A8 kernel's multiplier layout


def _forced_cutlass_group_mult(name: str):
    """The integer-multiplier configs of the group-wise CUTLASS kernel, with the same per-call unpack (forced: no op
    path runs them yet)."""
    from lowbit_flex.kernels.s8s4_unpacked_gemm import unpack_int4_triton
    from lowbit_flex.kernels.s8s8_groupwise_cutlass import s8s8_group_mult_cutlass

    def run(xq, xs, w4, ws):
        channel, mult = _group_mult_of(ws)
        return s8s8_group_mult_cutlass(xq, xs, unpack_int4_triton(w4), mult, channel, None, torch.bfloat16, name)

    return run


def _forced_w4a8_mult(name: str):
    """The Hopper W4A8 GEMM with the multipliers applied on the int4 -> int8 upcast (no unpack: the packed weight)."""
    from lowbit_flex.kernels.s8s4_cutlass import s8s4_group_mult_cutlass

    def run(xq, xs, w4, ws):
        channel, mult_t = _group_mult_t_of(ws)
        return s8s4_group_mult_cutlass(xq, xs, w4, channel, mult_t, None, torch.bfloat16, name)

    return run


def _forced_cutlass(launch, family: str, config: str):
    return lambda xq, xs, w4, ws: launch(xq, xs, w4, ws, None, torch.bfloat16, family, config)


def _methods(cutlass) -> dict:
    """Name -> fn(xq, xs, w4, ws) for every forced backend/config of ours."""
    from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS
    from lowbit_flex.kernels.s8s4_unpacked_gemm import UNPACKED_CONFIGS

    out = {f"triton {name}": _forced_triton(name) for name in TRITON_CONFIGS}
    out |= {f"unpacked {name}": _forced_unpacked(name) for name in UNPACKED_CONFIGS}
    # the same Triton configs on the g128 float scales (what a group-wise layer without multipliers runs)
    out |= {f"{_G128} {name}": fn for name, fn in out.items()}
    if cutlass is not None:
        configs, _supported, launch = cutlass
        for family, names in configs.items():
            out |= {f"cutlass {family} {c}": _forced_cutlass(launch, family, c) for c in names}
        from lowbit_flex.kernels.s8s8_groupwise_cutlass import GROUP_MULT_CONFIGS, configs_for_group

        # Group-wise only (timed on the g128 weights), so only the configs that take group 128.
        out |= {f"cutlass_groupwise {c}": _forced_cutlass_groupwise(c) for c in configs_for_group(128)}
        out |= {f"cutlass_groupwise {c}": _forced_cutlass_group_mult(c) for c in GROUP_MULT_CONFIGS}
        from lowbit_flex.kernels.s8s4_cutlass import GROUP_MULT_CONFIGS as W4A8_MULT_CONFIGS

        out |= {f"cutlass_groupwise w4a8 {c}": _forced_w4a8_mult(c) for c in W4A8_MULT_CONFIGS}
    keep = os.environ.get(_ENV_METHODS)
    return out if keep is None else {k: v for k, v in out.items() if k.startswith(tuple(keep.split(",")))}


_G128 = "g128"  # prefix of the Triton methods timed on the g128 weights


def _groupwise_only(name: str) -> bool:
    return name.startswith(("cutlass_groupwise", f"{_G128} "))


def _applicable(name: str, M: int, N: int, K: int, groupwise: bool, cutlass) -> bool:
    name = name.removeprefix(f"{_G128} ")
    if _groupwise_only(name):
        from lowbit_flex.kernels import s8s4_cutlass
        from lowbit_flex.kernels.s8s8_groupwise_cutlass import group_mult_supported, supported

        if name.startswith("cutlass_groupwise w4a8"):
            # no unpack pass: the 16-row tile is a decode / small-M tile (M <= 128), the others from M = 17
            decode_tile = int(name.split()[-1].split("x")[0]) <= 16
            in_range = M <= 128 if decode_tile else M > 16
            return groupwise and in_range and s8s4_cutlass.group_mult_supported(M, N, K, 128) and \
                s8s4_cutlass.library_available()  # fmt: skip
        ok = group_mult_supported if name.endswith("_int") else supported
        # a per-call unpack of the whole weight, like "unpacked": not a decode kernel
        return groupwise and M > 16 and ok(M, N, K, 128) and s8s4_cutlass.library_available()
    if name.startswith("cutlass"):
        return not groupwise and cutlass[1](name.split()[1], M, N, K)
    if name.startswith("unpacked"):
        return M > 16  # a per-call unpack of the whole weight: not a decode kernel
    from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS

    cfg = TRITON_CONFIGS[name.removeprefix("triton ")]
    return (M <= 256) if cfg.split_k else (M >= 64 or cfg.block_m <= 64)  # skip pathological tile/M pairs


def _check_all(methods, cutlass, K, N, weights) -> dict[str, str]:
    """Exact-reference check of every backend/config and scale kind on small M (1 and a ragged 77)."""
    checked: dict[str, str] = {}
    device = weights["per-channel"][0].device
    for M in (1, 77):
        xq = torch.randint(-128, 128, (M, K), device=device, dtype=torch.int8)
        xs = torch.rand(M, device=device) + 0.5
        for scale_name, (w4, ws) in weights.items():
            exact, magnitude = w4a8_exact_f64(xq, xs, unpack_int4(w4), ws)
            groups = 1 if ws.dim() == 1 else ws.shape[1]
            for name, fn in methods.items():
                if _applicable(name, M, N, K, ws.dim() == 2, cutlass):
                    ok, ratio = _check(fn(xq, xs, w4, ws), exact, magnitude, groups)
                    key = f"{name} {scale_name}"
                    checked[key] = checked.get(key, "ok") if ok else f"FAIL (err/bound {ratio:.3g} at M={M})"
    bad = {k: v for k, v in checked.items() if v != "ok"}
    print(f"  correctness: {len(checked) - len(bad)} backend/config/scale combinations within bounds; failures: {bad}")
    return checked


def run(bench: Bench) -> None:
    from lowbit_flex.kernels.s8s4_dispatch import rule_for

    cutlass = _cutlass()
    methods = _methods(cutlass)
    bw = copy_bandwidth_gbps()
    print(f"  copy bandwidth {bw:.0f} GB/s")
    table = bench.table("s8s4_linear W4A8 GEMM (bf16 out, no bias)", baseline="bf16 torch.mm")
    checked: dict[str, str] = {}
    for si, (K, N) in enumerate(SHAPES_KN[:1] if bench.quick else SHAPES_KN):
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
        # g128 in the integer-multiplier format, multipliers <= 16: float scales every group-wise kernel reads, and
        # (channel scale, multipliers) that the _int and w4a8 _mult configs read (_group_mult_of).
        packed, channel, mult = quantize_int4_weight_group_mult(w, 128, max_mult=GROUP_MULT_INT8_MAX)
        ws_g128 = group_mult_scales(channel, mult)
        _GROUP_MULT[id(ws_g128)] = (ws_g128, channel, mult)
        weights = {"per-channel": quantize_int4_weight(w), "g128": (packed, ws_g128)}
        w8 = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8)
        if si == 0:
            checked = _check_all(methods, cutlass, K, N, weights)
        ms = [int(m) for m in os.environ[_ENV_MS].split(",")] if os.environ.get(_ENV_MS) else MS
        for M in [1, 4096] if bench.quick else ms:
            n = max(1, min(16, math.ceil(_ROTATE_BYTES / (M * K * 2 + N * K * 2))))
            x = [torch.randn(M, K, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
            q = [(xq, xs.view(M)) for xq, xs in map(torch.ops.lowbit.quantize_int8_rowwise, x)]
            w4 = [(weights["per-channel"][0].clone(), weights["per-channel"][1]) for _ in range(n)]
            w4g = [(weights["g128"][0].clone(), weights["g128"][1]) for _ in range(n)]
            w8t = [w8.clone().t() for _ in range(n)]
            times = {"bf16 torch.mm": bench.time(_bf16_mm, *[(x[i], w.clone()) for i in range(n)])}
            extra = {}
            try:
                times["int_mm W8A8"] = bench.time(_int_mm, *[(q[i][0], w8t[i]) for i in range(n)])
            except RuntimeError as e:  # some versions need M > 16: time it padded to 32 rows and say so
                padded = [(torch.nn.functional.pad(q[i][0], (0, 0, 0, 32 - M)), w8t[i]) for i in range(n)]
                times["int_mm W8A8"] = bench.time(_int_mm, *padded)
                extra["int_mm"] = f"padded M to 32 ({type(e).__name__})"
            for name, fn in methods.items():
                gw = _groupwise_only(name)  # timed on the g128 weights, every other method per channel
                if _applicable(name, M, N, K, gw, cutlass):
                    times[name] = bench.time(fn, *[(*q[i], *(w4g if gw else w4)[i]) for i in range(n)])
            times["dispatched"] = bench.time(_dispatched, *[(*q[i], *w4[i]) for i in range(n)])
            times["dispatched g128"] = bench.time(_dispatched, *[(*q[i], *w4g[i]) for i in range(n)])
            times["whole linear"] = bench.time(_whole_linear, *[(x[i], *w4[i]) for i in range(n)])
            times["whole linear g128"] = bench.time(_whole_linear, *[(x[i], *w4g[i]) for i in range(n)])
            times["dispatched g128 mult"] = bench.time(_dispatched_mult, *[(*q[i], *w4g[i]) for i in range(n)])
            times["whole linear g128 mult"] = bench.time(_whole_linear_mult, *[(x[i], *w4g[i]) for i in range(n)])
            for kind, label, mult in (("per-channel", "backend", False), ("g128", "backend g128", False),
                                      ("g128", "backend g128 mult", True)):  # fmt: skip
                rule = rule_for(weights[kind][1].device, weights[kind][1], M, N, K, has_mult=mult)
                extra[label] = f"{rule.backend.value} {rule.config or ''}".strip()
            extra["TOPS dispatched"] = 2 * M * N * K / (times["dispatched"] * 1e-3) / 1e12
            extra["vs int_mm"] = times["int_mm W8A8"] / times["dispatched"]
            extra["whole/GEMM"] = times["whole linear"] / times["dispatched"]
            extra["g128/per-channel"] = times["dispatched g128"] / times["dispatched"]
            extra["g128 mult/per-channel"] = times["dispatched g128 mult"] / times["dispatched"]
            if M <= 16:
                extra["int4 floor frac"] = (N * K // 2) / (bw * 1e9) * 1e3 / times["dispatched"]
            if cutlass is None:
                extra["cutlass"] = "n/a"
            extra["checks"] = "all ok" if all(v == "ok" for v in checked.values()) else "FAILURES (see log)"
            table.add({"K": K, "N": N, "M": M}, times, **extra)
