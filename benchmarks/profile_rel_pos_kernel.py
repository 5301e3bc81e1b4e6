"""Launch ``lowbit::rel_pos_attention``'s eager kernel on one benchmark shape, for Nsight Compute on a GPU machine:

    ncu --clock-control none -k regex:rel_pos_attention --launch-skip 2 --launch-count 1 --set full \\
        --import-source yes -o rel_pos python3 -m benchmarks.profile_rel_pos_kernel --shape "vit_l global"

Two warm-up launches (the first compiles), then one more: the profiled launch. Optionally the Gluon kernel without
bias (``--no-bias``, the floor the bias is measured against) on the same inputs.
"""

from __future__ import annotations

import argparse

import torch

import lowbit_flex  # noqa: F401
from benchmarks.bench_rel_pos_attention import SHAPES, _inputs


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="vit_l global", choices=[name for name, _ in SHAPES])
    p.add_argument("--no-bias", action="store_true", help="the Gluon kernel's table config with Bias.NONE")
    args = p.parse_args()
    b, h, k_h, k_w, d = dict(SHAPES)[args.shape]
    q, k, v, rel_h, rel_w = _inputs(b, h, k_h, k_w, d)
    from lowbit_flex.kernels.rel_pos_attention import Bias, gluon_config, pick_gluon_config, rel_pos_attention_triton

    table = pick_gluon_config(d, k_h * k_w, k_w)
    if args.no_bias and table is None:
        raise SystemExit(f"--no-bias: {args.shape} does not run the Gluon kernel")
    # The same tiles without bias (rel_h is not staged: there is no bias to stage).
    config = gluon_config(table.block_n, table.num_stages, Bias.NONE, table.block_m) if args.no_bias else None

    for _ in range(3):
        rel_pos_attention_triton(q, k, v, rel_h, rel_w, config=config)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
