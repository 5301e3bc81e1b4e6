"""SAM's decomposed rel-pos attention: fused op and score_mod vs SDPA with a materialised bias, on SAM's shapes.

Tables: (1) every method per shape (ratios against eager SDPA + materialised bias, the code SAM ships), with the
relative error of each method against float64 on a slice, the issue's target ratios, and peak memory of the fused
op vs SDPA without bias; (2) a sweep of launch configs of the fused kernel around the fixed sm_90 table, to confirm
or update ``SM90_CONFIGS``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

import lowbit_flex  # noqa: F401
from benchmarks.harness import Bench
from lowbit_flex.score_mods._rel_pos_layout import normalize_rel_pos
from lowbit_flex.score_mods.rel_pos_bias import _DEFAULT_FORMULATION, _build, _Formulation
from lowbit_flex.testing import rel_error

# name, (B, H, k_h, k_w, D): L = k_h * k_w
SHAPES = [
    ("vit_b global", (8, 12, 64, 64, 64)),
    ("vit_b window", (200, 12, 14, 14, 64)),
    ("vit_h global", (8, 16, 64, 64, 80)),
    ("vit_h window", (200, 16, 14, 14, 80)),
    ("vit_b global x32", (32, 12, 64, 64, 64)),
]
BASELINE = "SDPA+bias eager"


def _sdpa_bias(q, k, v, rel_h, rel_w):
    """What SAM does: materialise the (B, H, L, L) bias, then SDPA with it as a float mask."""
    b, h, n, _ = q.shape
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, h, n, n)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def _sdpa_no_bias(q, k, v, rel_h, rel_w):
    return F.scaled_dot_product_attention(q, k, v)


def _flex(formulation: _Formulation):
    def attend(q, k, v, rel_h, rel_w):  # construction inside: its cost (e.g. COMBINED's copy) is timed too
        return flex_attention(q, k, v, score_mod=_build(normalize_rel_pos(rel_h, rel_w), formulation))

    return torch.compile(attend, dynamic=False)


def _fused(q, k, v, rel_h, rel_w):
    return torch.ops.lowbit.rel_pos_attention(q, k, v, rel_h, rel_w)


def _reference_f64(q, k, v, rel_h, rel_w):
    k_w = rel_w.shape[-1]
    j = torch.arange(k.shape[-2], device=q.device)
    bias = rel_h.double()[..., j // k_w] + rel_w.double()[..., j % k_w]
    s = q.double() @ k.double().transpose(-1, -2) * q.shape[-1] ** -0.5 + bias
    return torch.softmax(s, -1) @ v.double()


def _peak_bytes(fn, *args) -> int:
    """Peak memory allocated during one call, above what was allocated before it (inputs excluded)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn(*args)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    del out
    return peak


def _inputs(b, h, k_h, k_w, d):
    n = k_h * k_w
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    # SAM's rel_h/rel_w are q @ table products: O(1) values; random tables of SAM-like scale.
    rel_h = torch.randn(b, h, n, k_h, device="cuda", dtype=torch.bfloat16) * 2
    rel_w = torch.randn(b, h, n, k_w, device="cuda", dtype=torch.bfloat16) * 2
    return q, k, v, rel_h, rel_w


def _methods(quick: bool) -> dict:
    formulations = [_DEFAULT_FORMULATION] if quick else [v for v in _Formulation if v is not _Formulation.NAIVE]
    methods = {
        BASELINE: _sdpa_bias,
        "SDPA+bias compiled": torch.compile(_sdpa_bias, dynamic=False),
        "flex naive": _flex(_Formulation.NAIVE),
        **{f"flex {v.value}": _flex(v) for v in formulations},
        "fused op": _fused,
        "SDPA no bias": _sdpa_no_bias,
    }
    return methods


def run(bench: Bench) -> None:
    methods = _methods(bench.quick)
    score_mod_name = f"flex {_DEFAULT_FORMULATION.value}"
    table = bench.table("SAM rel-pos attention (bf16)", baseline=BASELINE)
    shapes = SHAPES[:2] if bench.quick else SHAPES
    for name, (b, h, k_h, k_w, d) in shapes:
        args = _inputs(b, h, k_h, k_w, d)
        n_ref = 1 if k_h * k_w > 1024 else 8  # float64 reference on a batch slice
        ref = _reference_f64(*(t[:n_ref] for t in args))
        errors, times = {}, {}
        for m, fn in methods.items():
            if fn is not _sdpa_no_bias:  # the speed-of-light reference computes something else
                errors[m] = rel_error(fn(*args)[:n_ref], ref)
            times[m] = bench.time(fn, args)
        fused, best_flex = times["fused op"], min(t for m, t in times.items() if m.startswith("flex "))
        table.add(
            {"shape": name, "B,H,L,D": f"{b},{h},{k_h * k_w},{d}"},
            times,
            err_fused=errors["fused op"],
            err_score_mod=errors[score_mod_name],
            err_worst=max(errors.values()),
            worst_method=max(errors, key=errors.get),
            fused_vs_compiled_bias=times["SDPA+bias compiled"] / fused,  # target >= 1.5 global, >= 1.0 window
            fused_over_no_bias=fused / times["SDPA no bias"],  # target <= 1.25
            score_mod_vs_compiled_bias=times["SDPA+bias compiled"] / times[score_mod_name],  # target >= 1.0 global
            best_flex_formulation=min((t, m) for m, t in times.items() if m.startswith("flex "))[1],
            best_flex_vs_compiled_bias=times["SDPA+bias compiled"] / best_flex,
            peak_MB_fused=_peak_bytes(_fused, *args) / 2**20,
            peak_MB_sdpa_no_bias=_peak_bytes(_sdpa_no_bias, *args) / 2**20,
            LxL_bias_MB=b * h * (k_h * k_w) ** 2 * 2 / 2**20,
        )
        del args, ref
    _config_sweep(bench, shapes)


def _config_sweep(bench: Bench, shapes) -> None:
    from lowbit_flex.kernels.common import LaunchConfig
    from lowbit_flex.kernels.rel_pos_attention import pick_config, rel_pos_attention_triton

    def Config(m, n, w, s):  # block_k is unused by this kernel
        return LaunchConfig(m, n, 0, w, s)

    table = bench.table("rel_pos_attention kernel: launch configs around the sm_90 table", baseline="table config")
    for name, (b, h, k_h, k_w, d) in shapes:
        args = _inputs(b, h, k_h, k_w, d)
        chosen = pick_config(d, k_h * k_w)
        candidates = {
            Config(128, 64, 8, 3), Config(128, 64, 4, 3), Config(128, 64, 8, 2), Config(64, 64, 4, 3),
            Config(64, 64, 4, 2), Config(64, 64, 8, 2), Config(128, 128, 8, 2), Config(64, 128, 4, 2),
            Config(32, 64, 4, 2),
        } - {chosen}  # fmt: skip
        if k_w in (32, 64, 128):  # row-aligned: BLOCK_N is k_w whatever the config says
            candidates = {c for c in candidates if c.block_n == 64}
        ref = _fused(*(t[:1] for t in args)).float()
        times = {"table config": bench.time(lambda *a, c=chosen: rel_pos_attention_triton(*a, config=c), args)}
        worst = 0.0
        for c in sorted(candidates, key=lambda c: (c.block_m, c.block_n, c.num_warps, c.num_stages)):
            fn = lambda *a, c=c: rel_pos_attention_triton(*a, config=c)
            worst = max(worst, rel_error(fn(*args)[:1], ref))
            times[f"M{c.block_m} N{c.block_n} w{c.num_warps} s{c.num_stages}"] = bench.time(fn, args)
        best = min(times, key=times.get)
        label = f"M{chosen.block_m} N{chosen.block_n} w{chosen.num_warps} s{chosen.num_stages}"
        table.add({"shape": name, "table": label}, times, best=best, max_rel_diff=worst)
        del args
