"""Run ``lowbit::sam_rel_pos``'s kernel over its table windows and query layouts, for compute-sanitizer.

    PYTHONPATH=. compute-sanitizer --tool memcheck python benchmarks/sanitize_sam_rel_pos.py

Small ragged grids: partial query blocks, blocks that start mid-row and span several rows, 1 x N and N x 1 grids,
rows wider than one table window, head dims padded to a power of two. Each run writes NaN-poisoned outputs,
compared with SAM's formulation in float64. Exits 1 on any mismatch.
"""

from __future__ import annotations

import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.kernels import sam_rel_pos as kernel
from lowbit_flex.score_mods import sam_rel_pos as sams_einsums

# (q_h, q_w, D)
CASES = [(5, 7, 16), (14, 14, 80), (9, 20, 24), (3, 150, 64), (1, 37, 8), (37, 1, 8), (64, 64, 64), (2, 256, 128)]

# The GPU, or the CPU under TRITON_INTERPRET=1 (a quick check of this script without one).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def main() -> int:
    torch.manual_seed(0)
    empty = torch.empty
    kernel.torch.empty = lambda *a, **kw: empty(*a, **kw).fill_(float("nan"))  # the launcher's outputs
    bad = runs = 0
    for q_h, q_w, d in CASES:
        b, h, L = 2, 3, q_h * q_w
        qkv = torch.randn(b, L, 3, h, d, device=DEVICE).to(torch.bfloat16)
        th = torch.randn(2 * q_h - 1, d, device=DEVICE).to(torch.bfloat16)
        tw = torch.randn(2 * q_w - 1, d, device=DEVICE).to(torch.bfloat16)
        token_major = qkv.permute(2, 0, 3, 1, 4)[0]  # SAM's view of its qkv projection
        for q in (token_major, token_major.reshape(b * h, L, d)):
            got = kernel.sam_rel_pos_triton(q, th, tw, q_h, q_w)
            ref = sams_einsums(q.double(), th.double(), tw.double(), (q_h, q_w), (q_h, q_w))
            for g, r in zip(got, ref):
                err = float((g.double() - r).norm() / r.norm())
                runs += 1
                if not err <= 1e-2:  # one bf16 rounding; NaN (unwritten) fails
                    bad += 1
                    print(f"MISMATCH {(q_h, q_w, d)} {tuple(q.shape)}: {err:.3e}")
    print(f"{runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
