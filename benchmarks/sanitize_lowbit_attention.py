"""Run ``lowbit::lowbit_attention``'s two kernels (Q/K/V quantization, attention) over ragged, GQA, causal and
short shapes, with TMA and plain loads, v's keys in order and in the MMA's order, and through the eager entry point
(bound launches), for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_lowbit_attention.py [--picks rule|candidates]

``--picks rule`` (the default) runs what the launch rule can choose: its tiles with TMA and with plain loads, the
traced fallback, the Gluon kernel's ring, and the eager entry point; ``candidates`` runs the configs the benchmark
times against the rule (``OCCUPANCY_CONFIGS``, the other Gluon rings). In two parts,
each can finish within one device call.

Each run writes a NaN-poisoned output, which is compared with the float64 reference of the same format
(``reference_lowbit_attention``) within the output rounding plus P's e4m3 rounding flips. Exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.attention import lowbit_attention
from lowbit_flex.kernels.fp8_attention import (
    GLUON_CONFIGS,
    GLUON_FALLBACK,
    OCCUPANCY_CONFIGS,
    fp8_attention_triton,
    pick_config,
)
from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton
from lowbit_flex.ops.lowbit_attention import QK_FORMATS, pv_16bit_dtype, reference_lowbit_attention
from lowbit_flex.quant.fp8 import K_BLOCK

# (H, Hkv, Lq, Lk, D): ragged keys and queries with GQA, one partial key block with short queries, one token.
SHAPES = [(4, 2, 200, 300, 64), (2, 1, 50, 90, 128), (2, 2, 1, 1, 64)]


def _picks(rule: bool) -> list:
    """``rule``: what the rule picks (per PV format, long and short queries), each Triton tile also with plain loads
    (layouts TMA cannot read) and the 128-query tile that traced calls take in the Gluon kernel's place; else the
    configs the benchmark times against the rule."""
    flags = itertools.product((64, 4096), (False, True), (False, True), (False, True))  # Lq, pv16, int8 QKᵀ, causal
    picks = list(dict.fromkeys(pick_config(*f) for f in flags))
    if not rule:
        return [*OCCUPANCY_CONFIGS, *(c for c in GLUON_CONFIGS if c not in picks)]
    triton = list(dict.fromkeys([*(c for c in picks if not c.gluon), GLUON_FALLBACK]))
    return [*triton, *(dataclasses.replace(c, tma=False) for c in triton), *(c for c in picks if c.gluon)]


_EMPTY = torch.empty


def _poisoned(*args, **kwargs):
    t = _EMPTY(*args, **kwargs)
    return t.fill_(float("nan")) if t.is_floating_point() else t.fill_(-128)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--picks", choices=("rule", "candidates"), default="rule")
    rule = p.parse_args(argv).picks == "rule"
    picks_of_run = _picks(rule)
    torch.manual_seed(0)
    torch.empty = _poisoned  # every allocation of the kernels' launchers (the references here use zeros / full)
    bad = runs = 0
    for (H, Hkv, Lq, Lk, D), qk, pv, causal in itertools.product(SHAPES, QK_FORMATS, ("fp8", "fp16"), (False, True)):
        q = torch.randn(1, H, Lq, D, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(1, Hkv, Lk, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        # per keys-per-step of the configs: 64-key steps round P against a different running max (the reference
        # with their step is their format)
        refs = {
            n: reference_lowbit_attention(q.cpu(), k.cpu(), v.cpu(), causal, None, qk, pv, True, False, n)
            for n in {c.block_n for c in picks_of_run} | {K_BLOCK}
        }
        v_fp8 = pv == "fp8"
        # an e4m3 v in its keys' order (the fp8_attention op's) and in the P·V MMA's (lowbit_attention's)
        layouts = {mma: quantize_qkv_triton(q, k, v, QK_FORMATS[qk], True, v_fp8, mma) for mma in {False, v_fp8}}
        # Each pick with each layout, then the eager entry point twice: it binds both launches once per metadata key,
        # then launches them with raw addresses of a scratch buffer.
        picks = [(c, mma) for c in picks_of_run for mma in layouts]
        for run in [*picks, *(("eager (planning)", "eager (bound)") if rule else ())]:
            ref = refs[K_BLOCK]
            if isinstance(run, str):
                out = lowbit_attention(q, k, v, causal=causal, qk=qk, pv=pv)
            else:
                config, mma = run
                ref = refs[config.block_n]
                q8, qs, k8, ks, v8, vs = layouts[mma]
                v_in = v8 if v_fp8 else v.to(pv_16bit_dtype(v.dtype))
                out = fp8_attention_triton(
                    q8, k8, v_in, qs, ks, vs, causal, None, q.dtype, False, config=config, v_mma_key_order=mma
                )
            err = float((out.cpu().double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))
            runs += 1
            if not err <= 1e-2:  # bf16 output rounding (4e-3) plus P rounding flips; NaN (unwritten) fails
                bad += 1
                print(f"MISMATCH {(H, Hkv, Lq, Lk, D)} {qk}/{pv} causal={causal} {run}: {err:.3e}")
    torch.cuda.synchronize()
    print(f"{runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
