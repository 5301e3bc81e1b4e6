"""How fast FlexAttention can run SAM's rel-pos bias as a score_mod: kernel_options, table layouts, backends.

Issue 13, item 3. One compiled ``flex_attention`` per variant (``dynamic=False``): the default formulation under a
few ``kernel_options`` (tiles, ``PRESCALE_QK``, the FLASH backend), the library's other formulations, and the bias
tables captured as float32 or as one combined ``(B, H, L, k_h + k_w)`` table. Each row: time, ratio against compiled
SDPA with the materialised bias (the baseline, measured in the same run), relative error against float64 on a slice
(a variant over ``MAX_REL_ERROR`` is flagged and not timed), compile seconds, and which variant was fastest.

A variant the backend cannot run (FLASH without the CuTe flash library) is recorded as unavailable, not raised. A
variant that transforms the tables is first compiled with the transform inside the graph, as a SAM forward would
run it; if that fails to lower, the tables are built eagerly before the compiled call, and the row says so (its
time then includes the eager build).

On CPU, FlexAttention lowers to its own C++ template, which ignores every option swept here (tiles, warps, stages,
``PRESCALE_QK``, ``BACKEND``): only the GPU numbers mean anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn.attention.flex_attention import _score_mod_signature, flex_attention

from benchmarks.bench_rel_pos_attention import SHAPES, _inputs, _reference_f64, _sdpa_bias
from benchmarks.harness import Bench
from lowbit_flex.score_mods._rel_pos_layout import RelPos, normalize_rel_pos
from lowbit_flex.score_mods.rel_pos_bias import _DEFAULT_FORMULATION, _build, _Formulation, rel_pos_kernel_options
from lowbit_flex.testing import rel_error

# SAM's global and window shapes, and a key grid that is neither square nor a power of two wide (48 x 40).
SWEEP_SHAPES = [s for s in SHAPES if s[0] in ("vit_b global", "vit_b window", "vit_h global", "grid 48x40")]
BASELINE = "SDPA+bias compiled"
MAX_REL_ERROR = 2e-2  # the bf16 materialised bias is ~1.5e-2 on these inputs; a score_mod should be ~2e-3
_LOG2E = 1 / math.log(2)


@dataclass(frozen=True, eq=False)
class _Variant:
    """One way to run the score_mod: FlexAttention ``kernel_options`` and the tables its closure captures."""

    name: str
    kernel_options: dict = field(default_factory=dict)
    formulation: _Formulation = _DEFAULT_FORMULATION
    table_dtype: torch.dtype | None = None  # None: rel_h's dtype (bf16 here)
    combined: bool = False  # one (B, H, L, k_h + k_w) table instead of two
    recommended: bool = False  # kernel_options: lowbit_flex.score_mods.rel_pos_kernel_options(D, L)

    @property
    def prescaled(self) -> bool:
        # With PRESCALE_QK the Triton template folds SM_SCALE * log2(e) into q, so the score_mod sees logits in
        # log2 units and adds the bias before the exp2: the bias must be in log2 units too (a plain bias would be
        # scaled by ln 2, a wrong result, not a rounding error).
        return bool(self.kernel_options.get("PRESCALE_QK"))

    @property
    def builds_tables(self) -> bool:
        return self.table_dtype is not None or self.combined or self.prescaled


def _tile(m: int, n: int, warps: int, stages: int) -> _Variant:
    options = {"BLOCK_M": m, "BLOCK_N": n, "num_warps": warps, "num_stages": stages}
    return _Variant(f"M{m} N{n} w{warps} s{stages}", options)


def variants(quick: bool) -> list[_Variant]:
    """The sweep. Without options, torch 2.13 picks 128 x 128 tiles, 4 warps, 3 stages on sm_90 for bf16 at D = 64
    and 64 x 64 w4 s3 at D = 80 (its table has no 80; 2.11's may differ). ``rel_pos_kernel_options`` is the
    library's pick (H200 run 39: 2.2-4.8x faster than the defaults); the other tiles and ``PRESCALE_QK`` (alone and
    with those tiles) are what it was chosen from."""
    default = _Variant("default")
    recommended = _Variant("rel_pos_kernel_options", recommended=True)
    flash = _Variant("FLASH backend", {"BACKEND": "FLASH"})
    if quick:
        return [default, recommended, flash]
    return [
        default,
        recommended,
        _tile(64, 32, 4, 3),
        _tile(64, 64, 4, 2),
        _tile(128, 64, 8, 3),
        _Variant("PRESCALE_QK, tables x log2(e)", {"PRESCALE_QK": True}),
        _Variant("M64 N64 w4 s3, PRESCALE_QK", {**rel_pos_kernel_options(64, 4096), "PRESCALE_QK": True}),
        flash,
        *(_Variant(f"formulation {f.value}", formulation=f) for f in _Formulation if f is not _DEFAULT_FORMULATION),
        _Variant("tables float32", table_dtype=torch.float32),
        _Variant("combined table", combined=True),
    ]


def _prepare(variant: _Variant, rel: RelPos) -> tuple[torch.Tensor, ...]:
    """The tensors the closure captures."""
    tables = tuple(rel)
    if variant.table_dtype is not None:
        tables = tuple(t.to(variant.table_dtype) for t in tables)
    if variant.prescaled:
        tables = tuple(t * _LOG2E for t in tables)
    if variant.combined:
        tables = (torch.cat(tables, dim=-1),)
    return tables


def _score_mod(variant: _Variant, tables: tuple[torch.Tensor, ...], k_h: int, k_w: int) -> _score_mod_signature:
    if not variant.combined:
        return _build(RelPos(*tables), variant.formulation)
    (table,) = tables

    # Not a library formulation: built inside a compiled graph, torch 2.11 cannot lower it (see
    # docs/rel_pos_attention.md). Both gathers of a logit read one row through one base pointer.
    def rel_pos_bias_combined(score, b, h, q_idx, kv_idx):
        row = torch.div(kv_idx, k_w, rounding_mode="trunc")
        return score + table[b, h, q_idx, row] + table[b, h, q_idx, k_h + kv_idx - row * k_w]

    rel_pos_bias_combined.__name__ = f"rel_pos_bias_combined_{k_h}x{k_w}"
    return rel_pos_bias_combined


def method(variant: _Variant, *, in_graph: bool) -> Callable:
    """``fn(q, k, v, rel_h, rel_w)``: the tables prepared inside the compiled graph, or eagerly before it."""

    def attend(q, k, v, tables, k_h, k_w):
        options = (
            rel_pos_kernel_options(q.shape[3], q.shape[2]) if variant.recommended else dict(variant.kernel_options)
        )
        return flex_attention(q, k, v, score_mod=_score_mod(variant, tables, k_h, k_w), kernel_options=options or None)

    if in_graph:

        def attend_in_graph(q, k, v, rel_h, rel_w):
            rel = normalize_rel_pos(rel_h, rel_w)
            return attend(q, k, v, _prepare(variant, rel), rel.k_h, rel.k_w)

        return torch.compile(attend_in_graph, dynamic=False)
    compiled = torch.compile(attend, dynamic=False)

    def attend_eager_tables(q, k, v, rel_h, rel_w):
        rel = normalize_rel_pos(rel_h, rel_w)
        return compiled(q, k, v, _prepare(variant, rel), rel.k_h, rel.k_w)

    return attend_eager_tables


@dataclass
class Outcome:
    fn: Callable | None  # what to time; None when unavailable or wrong
    status: str
    rel_err: float | None = None
    compile_s: float | None = None


def _reason(e: Exception) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:200].replace("|", "/")  # a markdown table cell


def check(variant: _Variant, args: tuple, ref: torch.Tensor, n_ref: int) -> Outcome:
    """Compile and run ``variant`` once (the first call compiles), compare ``[:n_ref]`` of its output with ``ref``."""
    failures = []
    for in_graph in (True, False) if variant.builds_tables else (True,):
        fn = method(variant, in_graph=in_graph)
        t0 = time.perf_counter()
        try:
            out = fn(*args)
        except Exception as e:  # a backend or lowering the installed torch lacks: record it, keep sweeping
            failures.append(("in-graph tables: " if variant.builds_tables and in_graph else "") + _reason(e))
            continue
        compile_s = time.perf_counter() - t0
        err = rel_error(out[:n_ref], ref)
        note = "" if in_graph else f"; tables built eagerly, {failures[0]}"
        if not err <= MAX_REL_ERROR:  # NaN fails too
            return Outcome(None, f"wrong: rel err {err:.3g} > {MAX_REL_ERROR:g}, not timed{note}", err, compile_s)
        return Outcome(fn, "ok" + note, err, compile_s)
    return Outcome(None, "unavailable: " + "; eager tables: ".join(failures))


def run(bench: Bench) -> None:
    table = bench.table("rel_pos_bias score_mod: kernel_options, table layouts, backends (bf16)", baseline=BASELINE)
    sweep = variants(bench.quick)
    shapes = [SWEEP_SHAPES[0], SWEEP_SHAPES[-1]] if bench.quick else SWEEP_SHAPES
    baseline = torch.compile(_sdpa_bias, dynamic=False)
    for name, (b, h, k_h, k_w, d) in shapes:
        args = _inputs(b, h, k_h, k_w, d)
        n_ref = 1 if k_h * k_w > 1024 else 8  # float64 reference on a batch slice
        ref = _reference_f64(*(t[:n_ref] for t in args))
        case = {"shape": name, "B,H,L,D": f"{b},{h},{k_h * k_w},{d}"}
        t_base = bench.time(baseline, args)
        rows = [(_Variant(BASELINE), Outcome(baseline, "baseline", rel_error(baseline(*args)[:n_ref], ref)), None)]
        for v in sweep:
            outcome = check(v, args, ref, n_ref)
            print(f"  {name} / {v.name}: {outcome.status}", flush=True)
            rows.append((v, outcome, bench.time(outcome.fn, args) if outcome.fn is not None else None))
        timed = {v.name: t for v, _, t in rows if t is not None}
        best = min(timed, key=timed.get) if timed else None
        for v, outcome, t in rows:
            times = {BASELINE: t_base} | ({"score_mod": t} if t is not None else {})
            table.add(
                case | {"variant": v.name},
                times,
                rel_err=outcome.rel_err,
                vs_default=timed["default"] / t if t is not None and "default" in timed else None,
                compile_s=outcome.compile_s,
                best="best" if v.name == best else "",
                status=outcome.status,
            )
        del args, ref
