"""SAM's decomposed rel-pos attention: fused op and score_mod vs SDPA with a materialised bias, on SAM's shapes.

Tables: (1) every method per shape (ratios against eager SDPA + materialised bias, the code SAM ships), with the
relative error of each method against float64 on a slice, the issue's target ratios, and peak memory of the fused
op vs SDPA without bias; (2) host time per eager call next to SDPA's; (3) a sweep of launch configs of the fused
kernel around the fixed sm_90 table (tiles, bias formation, head-dim split, and the kernel without bias as its
floor), to confirm or update ``SM90_CONFIGS``.

``LOWBIT_BENCH_REL_POS_TABLES`` picks tables (``main``, ``host``, ``sweep``), ``LOWBIT_BENCH_REL_POS_SHAPES`` shapes by
name (main table and sweep), ``LOWBIT_BENCH_REL_POS_FLEX=0`` leaves the score_mod (a compile per shape) out of the main
table. For an A/B of a few configs: ``LOWBIT_BENCH_REL_POS_CONFIGS`` keeps the sweep's configs whose label holds one
of its comma-separated parts (the table's config and its floor without bias always run), and
``LOWBIT_BENCH_REL_POS_ROUNDS=N`` times every config N times, round-robin, and reports each one's median (single
timings of one config drifted 2-5 % within a call).
"""

from __future__ import annotations

import dataclasses
import os
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

import lowbit_flex  # noqa: F401
from benchmarks.harness import Bench, selected_names
from lowbit_flex.score_mods._rel_pos_layout import normalize_rel_pos
from lowbit_flex.score_mods.rel_pos_bias import _DEFAULT_FORMULATION, _build, _Formulation, rel_pos_kernel_options
from lowbit_flex.testing import rel_error

# name, (B, H, k_h, k_w, D): L = k_h * k_w. SAM's encoders: global blocks attend over the 64 x 64 token grid,
# the others over 14 x 14 windows (25 per image); batch 1 is interactive SAM; 48 x 40 is a non-square image grid.
SHAPES = [
    ("vit_b global", (8, 12, 64, 64, 64)),
    ("vit_b window", (200, 12, 14, 14, 64)),
    ("vit_h global", (8, 16, 64, 64, 80)),
    ("vit_h window", (200, 16, 14, 14, 80)),
    ("vit_l global", (8, 16, 64, 64, 64)),
    ("vit_b global b1", (1, 12, 64, 64, 64)),
    ("vit_h global b1", (1, 16, 64, 64, 80)),
    ("vit_b window b1", (25, 12, 14, 14, 64)),
    ("grid 48x40", (4, 12, 48, 40, 64)),
]
BASELINE = "SDPA+bias eager"
_TABLES = ("main", "host", "sweep")  # tables 1-3
_ENV_TABLES = "LOWBIT_BENCH_REL_POS_TABLES"  # e.g. "main,sweep": only these tables
_ENV_SHAPES = "LOWBIT_BENCH_REL_POS_SHAPES"  # e.g. "grid 48x40,vit_b global": only these shapes (main and sweep)
_ENV_CONFIGS = "LOWBIT_BENCH_REL_POS_CONFIGS"  # e.g. "gluon": sweep only configs whose label holds one of these
_ENV_ROUNDS = "LOWBIT_BENCH_REL_POS_ROUNDS"  # e.g. "5": time each config of the sweep 5 times, interleaved; median
_ENV_FLEX = "LOWBIT_BENCH_REL_POS_FLEX"  # "0": the main table without the score_mod (a FlexAttention compile per shape)


def _sdpa_bias(q, k, v, rel_h, rel_w):
    """What SAM does: materialise the (B, H, L, L) bias, then SDPA with it as a float mask."""
    b, h, n, _ = q.shape
    bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, h, n, n)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)


def _sdpa_no_bias(q, k, v, rel_h, rel_w):
    return F.scaled_dot_product_attention(q, k, v)


def _flex(formulation: _Formulation):
    def attend(q, k, v, rel_h, rel_w):  # construction inside: its cost is timed too
        score_mod = _build(normalize_rel_pos(rel_h, rel_w), formulation)
        return flex_attention(
            q, k, v, score_mod=score_mod, kernel_options=rel_pos_kernel_options(q.shape[3], q.shape[2])
        )

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


def _methods(flex: bool) -> dict:
    """Every method of the main table. The score_mod appears in its default formulation only (and not in quick
    runs: each shape costs a FlexAttention compile); ``bench_rel_pos_score_mod`` compares formulations and options."""
    methods = {
        BASELINE: _sdpa_bias,
        "SDPA+bias compiled": torch.compile(_sdpa_bias, dynamic=False),
        **({f"flex {_DEFAULT_FORMULATION.value}": _flex(_DEFAULT_FORMULATION)} if flex else {}),
        "fused op": _fused,
        "SDPA no bias": _sdpa_no_bias,
    }
    return methods


def run(bench: Bench) -> None:
    tables = selected_names(_ENV_TABLES, _TABLES)
    shapes = SHAPES[:2] if bench.quick else SHAPES
    if os.environ.get(_ENV_SHAPES):
        names = selected_names(_ENV_SHAPES, [n for n, _ in SHAPES])
        shapes = [s for s in SHAPES if s[0] in names]
    if "main" in tables:
        _main_table(bench, shapes, flex=not bench.quick and os.environ.get(_ENV_FLEX) != "0")
    if "host" in tables:
        _host_times(bench)
    if "sweep" in tables:
        _config_sweep(bench, shapes)


def _main_table(bench: Bench, shapes, flex: bool) -> None:
    methods = _methods(flex)
    score_mod = f"flex {_DEFAULT_FORMULATION.value}"
    table = bench.table("SAM rel-pos attention (bf16)", baseline=BASELINE)
    for name, (b, h, k_h, k_w, d) in shapes:
        args = _inputs(b, h, k_h, k_w, d)
        n_ref = 1 if k_h * k_w > 1024 else 8  # float64 reference on a batch slice
        ref = _reference_f64(*(t[:n_ref] for t in args))
        errors, times = {}, {}
        for m, fn in methods.items():
            if fn is not _sdpa_no_bias:  # the speed-of-light reference computes something else
                errors[m] = rel_error(fn(*args)[:n_ref], ref)
            times[m] = bench.time(fn, args)
        fused = times["fused op"]
        flex = (
            {"score_mod_vs_compiled_bias": times["SDPA+bias compiled"] / times[score_mod]} if score_mod in times else {}
        )
        table.add(
            {"shape": name, "B,H,L,D": f"{b},{h},{k_h * k_w},{d}"},
            times,
            err_fused=errors["fused op"],
            err_worst=max(errors.values()),
            worst_method=max(errors, key=errors.get),
            fused_vs_compiled_bias=times["SDPA+bias compiled"] / fused,  # target >= 1.1 on every shape
            fused_over_no_bias=fused / times["SDPA no bias"],  # target <= 1.2 global, <= 1.35 windows and grids
            **flex,
            peak_MB_fused=_peak_bytes(_fused, *args) / 2**20,
            peak_MB_sdpa_no_bias=_peak_bytes(_sdpa_no_bias, *args) / 2**20,
            LxL_bias_MB=b * h * (k_h * k_w) ** 2 * 2 / 2**20,
        )
        del args, ref


def _sweep_candidates(k_h: int, k_w: int, d: int):
    """Configs to time around the table's pick: tiles, warps, stages, TMA loads, both bias formations and the Gluon
    kernel, for short (SAM's windows) and long (global attention, other grids) sequences; for grids whose rows are
    no power of two, the 64- and 128-slot blocks (one padded row, or packed rows). Every one was AOT-compiled for
    sm_90 before its first GPU run; the head-dim split against padding and the kernel without bias (its floor) are
    added by the sweep."""
    from lowbit_flex.kernels.rel_pos_attention import (
        GLUON_HEAD_DIMS,
        GLUON_MAX_TILE,
        MMA_COLUMN_GROUP,
        Bias,
        RelPosConfig,
        gluon_config,
        gluon_rows_block_n,
    )

    def c(m, n, w, st, bias=Bias.ROWS, tma=False, key_row_max=True):
        return RelPosConfig(m, n, 0, w, st, bias, True, tma, key_row_max=key_row_max)

    # The warp-specialized Gluon kernel on long sequences (SAM's windows already meet issue 13's target), where it
    # runs (sm_90, head dims 64 and 128; elsewhere its configs would time the Triton plan): the tiles that came
    # closest in run 47 (three consumer warpgroups with 64-slot blocks, two with 128-slot blocks; 3-4 ring slots),
    # within their registers, and its floor without bias. Dropped there: 2 slots, two consumers with 64-slot blocks.
    # Where a block is one whole, unpadded key row (SAM's global grid), each also with rel_h staged in shared memory
    # (the A/B of run 57).
    gluon = []
    if (
        k_h * k_w > 256
        and d in GLUON_HEAD_DIMS
        and torch.cuda.is_available()
        and torch.cuda.get_device_capability() == (9, 0)
    ):
        tiles = ((192, 64, 3), (192, 64, 4), (128, 128, 3), (128, 64, 3))
        gluon = [
            gluon_config(n, st, block_m=m, rel_h_staged=staged)
            for m, n, st in tiles
            for staged in (False, True)
            if gluon_rows_block_n(k_w, n) == n and d * n <= GLUON_MAX_TILE[m // 64] and (not staged or n == k_w)
        ]
        # Three consumers' tiles with programs across heads (the A/B of session 61: no head's last partial block
        # run alone; vit_l 2731 programs for 2816). AOT-compiled in tests/kernels/aot_cases.py.
        gluon += [dataclasses.replace(g, cross_heads=True) for g in gluon if g.block_m == 192]
        floors = ((128, 128), (128, 64), (192, 64))  # without bias: the widest block each warpgroup count fits
        fits = [(m, n) for m, n in floors if d * n <= GLUON_MAX_TILE[m // 64]]
        gluon += [gluon_config(n, 3, Bias.NONE, block_m=m) for m, n in dict(reversed(fits)).items()]
    if k_h * k_w <= 256:
        return [c(128, 32, 8, 3), c(64, 32, 4, 3), c(64, 64, 4, 3), c(64, 32, 4, 3, tma=True),
                c(128, 32, 8, 3, tma=True), c(64, 32, 4, 3, Bias.ONEHOT)]  # fmt: skip
    packed = k_w & (k_w - 1)  # rows that are no power of two: one padded row per 64 slots, or packed rows per 128
    rows = (
        [c(64, 128, 4, 3), c(64, 128, 4, 3, tma=True), c(64, 128, 8, 3), c(64, 128, 8, 3, tma=True)] if packed else []
    )
    if packed and k_w % MMA_COLUMN_GROUP == 0:  # rel_h per logit instead of per key row's max (the A/B)
        rows += [c(64, 128, 4, 3, key_row_max=False), c(64, 128, 4, 3, tma=True, key_row_max=False)]
    return [*rows, c(64, 64, 4, 3), c(64, 64, 4, 3, tma=True), c(128, 64, 4, 3), c(128, 64, 8, 3),
            c(64, 64, 4, 2), c(64, 64, 4, 3, Bias.ONEHOT), *gluon]  # fmt: skip


def _config_sweep(bench: Bench, shapes) -> None:
    import dataclasses

    from lowbit_flex.kernels.rel_pos_attention import Bias, pick_config, rel_pos_attention_triton

    def label(c) -> str:
        return (
            f"{c.bias.name.lower()} M{c.block_m} N{c.block_n} w{c.num_warps} s{c.num_stages}"
            + ("" if c.split_d else " padD")
            + (" tma" if c.tma else "")
            + (" gluon" if c.gluon else "")
            + ("" if c.key_row_max else " rh/logit")
            + (" rh-smem" if c.rel_h_staged else "")
            + (" xheads" if c.cross_heads else "")
        )

    keep = [part.strip() for part in os.environ.get(_ENV_CONFIGS, "").split(",") if part.strip()]
    rounds = int(os.environ.get(_ENV_ROUNDS, "1"))
    if rounds < 1:
        raise ValueError(f"{_ENV_ROUNDS}: expected a count >= 1, got {rounds}")
    labels = {label(c) for _, (_, _, k_h, k_w, d) in shapes for c in _sweep_candidates(k_h, k_w, d)}
    if unmatched := [part for part in keep if not any(part in lb for lb in labels)]:
        # as selected_names: a typo raises rather than silently timing the table's configs alone
        raise ValueError(f"{_ENV_CONFIGS}: no sweep config of these shapes has {unmatched} in its label")
    title = "rel_pos_attention kernel: launch configs around the sm_90 table"
    table = bench.table(title + (f" (median of {rounds} round-robin timings)" if rounds > 1 else ""), "table config")
    for name, (b, h, k_h, k_w, d) in shapes:
        args = _inputs(b, h, k_h, k_w, d)
        chosen = pick_config(d, k_h * k_w, k_w)
        extra = [dataclasses.replace(chosen, bias=Bias.NONE)]
        if d & (d - 1):  # not a power of two: the padded head dim against the split one
            extra.append(dataclasses.replace(chosen, split_d=False))
        cands = [c for c in _sweep_candidates(k_h, k_w, d) if not keep or any(part in label(c) for part in keep)]
        cands = list(dict.fromkeys(c for c in cands if c != chosen)) + extra
        small = tuple(t[:1, :2] for t in args)  # float64 reference on one (batch, 2 heads) slice
        ref = _reference_f64(*small)
        runs = {"table config": lambda *a, c=chosen: rel_pos_attention_triton(*a, config=c)}
        errors = {"table config": rel_error(runs["table config"](*small), ref)}
        for c in cands:
            fn = lambda *a, c=c: rel_pos_attention_triton(*a, config=c)
            try:  # compiles it
                out = fn(*small)
                if c.bias is not Bias.NONE:
                    errors[label(c)] = rel_error(out, ref)
                runs[label(c)] = fn
            except Exception as e:  # a config that does not compile or fit: recorded, the sweep goes on
                print(f"  {name} {label(c)}: {type(e).__name__}: {str(e)[:200]}")
        timings = {m: [] for m in runs}
        for _ in range(rounds):
            for m, fn in runs.items():
                timings[m].append(bench.time(fn, args))
        times = {m: statistics.median(t) for m, t in timings.items()}
        ranked = sorted((t, m) for m, t in times.items() if "none" not in m)
        table.add(
            {"shape": name, "table": label(chosen)},
            times,
            best=ranked[0][1],
            best_vs_table=times["table config"] / ranked[0][0],
            bias_cost=times["table config"] / times[label(extra[0])],  # table config over the same without bias
            max_err=max(errors.values()),
            worst=max(errors, key=errors.get),
        )
        del args


def _host_times(bench: Bench) -> None:
    """Host microseconds per eager call (no CUDA graph), next to SDPA with a float mask: what a batch-1 or
    uncompiled caller pays before the GPU starts. The op is timed through the public wrapper and the dispatcher."""
    from benchmarks.harness import host_us
    from lowbit_flex.ops import rel_pos_attention

    table = bench.table("rel_pos_attention host time per eager call (µs, in the ms columns / 1000)", "SDPA+mask")
    for name, (b, h, k_h, k_w, d) in [s for s in SHAPES if s[0] in ("vit_b window b1", "vit_b global b1")]:
        q, k, v, rel_h, rel_w = _inputs(b, h, k_h, k_w, d)
        mask = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, h, k_h * k_w, k_h * k_w)
        times = {
            "SDPA+mask": host_us(F.scaled_dot_product_attention, q, k, v, mask),
            "SDPA no bias": host_us(F.scaled_dot_product_attention, q, k, v),
            "ops.rel_pos_attention": host_us(rel_pos_attention, q, k, v, rel_h, rel_w),
            "torch.ops.lowbit": host_us(_fused, q, k, v, rel_h, rel_w),
        }
        table.add({"shape": name}, {m: t / 1e3 for m, t in times.items()}, **{f"{m} µs": t for m, t in times.items()})
