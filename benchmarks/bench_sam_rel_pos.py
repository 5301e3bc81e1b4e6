"""``lowbit::sam_rel_pos`` (SAM's rel_h / rel_w in one kernel) against SAM's own formulation (table gathers and two
einsums), eager and compiled, on the query SAM has: its strided view of the ``qkv`` projection.

GPU ms (CUDA-graph replays) and host µs per eager call (and per call of the compiled SAM formulation, which launches
several kernels where the op launches one), with the op's relative error against float64.
"""

from __future__ import annotations

import torch

import lowbit_flex  # noqa: F401
from benchmarks.harness import Bench, host_us
from lowbit_flex.ops import sam_rel_pos
from lowbit_flex.score_mods import sam_rel_pos as sams_einsums
from lowbit_flex.testing import rel_error

# name, (images x windows, heads, grid, head dim): SAM's global blocks (64 x 64 tokens) and 14 x 14 windows (25 per
# image), batch 1 (interactive SAM) and 8, ViT-H's head dim 80, and a non-square 48 x 40 image grid.
SHAPES = [
    ("vit_b global b1", (1, 12, 64, 64, 64)),
    ("vit_b window b1", (25, 12, 14, 14, 64)),
    ("vit_b global", (8, 12, 64, 64, 64)),
    ("vit_b window", (200, 12, 14, 14, 64)),
    ("vit_h global b1", (1, 16, 64, 64, 80)),
    ("grid 48x40", (4, 12, 48, 40, 64)),
]
BASELINE = "SAM einsums eager"


def _inputs(b, h, q_h, q_w, d):
    qkv = torch.randn(b, q_h * q_w, 3, h, d, device="cuda", dtype=torch.bfloat16)
    q = qkv.permute(2, 0, 3, 1, 4)[0]  # SAM's (B, H, L, D) view, token-major
    tables = [(torch.randn(2 * s - 1, d, device="cuda") * 0.5).bfloat16() for s in (q_h, q_w)]
    return q, *tables


def run(bench: Bench) -> None:
    table = bench.table("SAM rel_h / rel_w: lowbit::sam_rel_pos vs SAM's formulation (bf16)", BASELINE)
    for name, (b, h, q_h, q_w, d) in SHAPES[:2] if bench.quick else SHAPES:
        q, th, tw = _inputs(b, h, q_h, q_w, d)
        sizes = ((q_h, q_w), (q_h, q_w))

        def einsums(q, th, tw, sizes=sizes):
            return sams_einsums(q, th, tw, *sizes)

        def op(q, th, tw, sizes=sizes):
            return sam_rel_pos(q, th, tw, *sizes)

        compiled = torch.compile(einsums, dynamic=False)
        args = (q, th, tw)
        times = {
            BASELINE: bench.time(einsums, args),
            "SAM einsums compiled": bench.time(compiled, args),
            "lowbit op": bench.time(op, args),
        }
        ref = sams_einsums(q.double(), th.double(), tw.double(), *sizes)
        got = op(*args)
        table.add(
            {"shape": name},
            times,
            **{
                "host µs einsums eager": host_us(einsums, *args),
                "host µs einsums compiled": host_us(compiled, *args),
                "host µs op": host_us(op, *args),
                "rel_err op": max(rel_error(g, r) for g, r in zip(got, ref)),
                "rel_err einsums": max(rel_error(g, r) for g, r in zip(einsums(*args), ref)),
            },
        )
