"""Run ``lowbit::rel_pos_attention``'s kernel over every way it forms the bias and every output layout, for
compute-sanitizer.

    PYTHONPATH=. compute-sanitizer --tool memcheck python benchmarks/sanitize_rel_pos_attention.py

Shapes are small (the tool slows kernels ~100x) but ragged: partial query blocks, padding slots, partial last key
blocks. Each run writes a NaN-poisoned output, compared with the float64 definition. Exits 1 on any mismatch.
"""

from __future__ import annotations

import dataclasses
import sys

import torch

import lowbit_flex  # noqa: F401
from benchmarks.bench_rel_pos_attention import _reference_f64
from lowbit_flex.kernels.rel_pos_attention import Bias, RelPosConfig, gluon_config, rel_pos_attention_triton

# (k_h, k_w, D, config or None for the table's): SAM's 14 x 14 window and 12 x 40 / 13 x 40 grids as the table
# runs them (2 and 3 packed rows per block; the 40-wide rows with each key row's max and TMA loads), whole 64-wide
# rows (rel_h loaded a block ahead, the last load past k_h masked), 4 rows per block whose last block runs past L,
# one row per block with padding (rel_h in the row max), rows gathered (a 37 x 1 grid, 5 x 3 with 16-slot blocks),
# the one-hot MMA with a rel_h window, a row wider than 128 slots, D = 80 split; then TMA loads (sm_90): packed
# rows, a head dim padded past D, and a split head dim (which keeps pointer loads); then the Gluon kernel.
_TMA = RelPosConfig(64, 32, 0, 4, 3, Bias.ROWS, True, True)
CASES = [
    (14, 14, 64, None),
    (14, 14, 80, None),
    (16, 64, 64, None),
    (14, 14, 16, RelPosConfig(32, 64, 0, 4, 3, Bias.ROWS)),
    (12, 40, 64, None),
    (13, 40, 64, None),  # packed rows with TMA loads (the table on long grids), the last block one row of three
    (13, 40, 64, RelPosConfig(64, 128, 0, 4, 3, Bias.ROWS, key_row_max=False)),  # rel_h added per logit
    (6, 40, 80, RelPosConfig(64, 64, 0, 4, 3, Bias.ROWS)),
    (37, 1, 64, None),
    (5, 3, 16, RelPosConfig(16, 16, 0, 4, 2, Bias.ROWS)),
    (24, 5, 40, RelPosConfig(32, 32, 0, 4, 2, Bias.ONEHOT)),
    (2, 160, 64, None),
    (14, 14, 64, _TMA),
    (12, 40, 80, dataclasses.replace(_TMA, block_n=128, num_warps=8)),
    (37, 1, 24, _TMA),
    # The Gluon kernel (sm_90; elsewhere these run the table's Triton plan): one row per block with and without
    # padding slots, 2-4 selected rows with a last block past the grid, 2 ring slots wrapping, D = 128, three
    # consumer warpgroups; then rel_h staged in shared memory.
    (16, 64, 64, gluon_config(64, 2)),
    (12, 40, 64, gluon_config(128, 3)),
    (14, 14, 64, gluon_config(64, 3)),
    (7, 9, 64, gluon_config(32, 4)),
    (3, 64, 128, gluon_config(64, 3)),
    (12, 40, 64, gluon_config(64, 2, block_m=192)),
    # rel_h staged in shared memory: 16 of 16 key rows, 12 of 16 (the rest masked), D = 128 with two consumers
    (16, 64, 64, gluon_config(64, 3, block_m=192, rel_h_staged=True)),
    (12, 40, 64, gluon_config(64, 2, block_m=192, rel_h_staged=True)),
    (3, 64, 128, gluon_config(64, 3, rel_h_staged=True)),
    # Programs across heads (b = 2, h = 3): 5 chunks a head (programs holding two heads), SAM's window (4 chunks,
    # the last of 4 rows), D = 128 with two consumers (3 chunks a head). Chunks past every head: the GPU tests.
    (5, 64, 64, gluon_config(64, 3, block_m=192, rel_h_staged=True, cross_heads=True)),
    (14, 14, 64, gluon_config(64, 3, block_m=192, cross_heads=True)),
    (3, 64, 128, gluon_config(64, 2, rel_h_staged=True, cross_heads=True)),
]


# The GPU, or the CPU under TRITON_INTERPRET=1 (a quick check of this script without one).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _poisoned(*args, **kwargs):
    return _EMPTY_STRIDED(*args, **kwargs).fill_(float("nan"))


_EMPTY_STRIDED = torch.empty_strided


def main() -> int:
    torch.manual_seed(0)
    torch.empty_strided = _poisoned  # the launcher's output
    bad = runs = 0
    for k_h, k_w, d, config in CASES:
        b, h, L = 2, 3, k_h * k_w
        rel_h = torch.randn(b, h, L, k_h, device=DEVICE).to(torch.bfloat16)
        rel_w = torch.randn(b, h, L, k_w, device=DEVICE).to(torch.bfloat16)
        qkv = torch.randn(b, L, 3, h, d, device=DEVICE).to(torch.bfloat16)
        token_major = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # SAM's views: the output is (B, L, H, D) in memory
        contiguous = tuple(t.contiguous() for t in token_major)
        for q, k, v in (token_major, contiguous):
            out = rel_pos_attention_triton(q, k, v, rel_h, rel_w, config=config)
            ref = _reference_f64(q, k, v, rel_h, rel_w)
            err = float((out.double() - ref).norm() / ref.norm())
            runs += 1
            if not err <= 1e-2:  # bf16 rounding of P and the output; NaN (unwritten) fails
                bad += 1
                print(f"MISMATCH {(k_h, k_w, d)} {config} contiguous={q.is_contiguous()}: {err:.3e}")
    print(f"{runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
