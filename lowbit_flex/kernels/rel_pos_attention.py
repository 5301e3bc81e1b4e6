"""Flash attention with SAM's decomposed relative-position bias added to the logits in registers.

One program owns ``BLOCK_M`` queries of one (batch, head) and streams the keys in blocks with an online softmax
(fp32 statistics and accumulator, ``exp2`` with ``log2(e)`` folded into the scale). The bias
``rel_h[i, j // k_w] + rel_w[i, j % k_w]`` never exists as an ``L x L`` tensor. Two ways to add it, chosen per
shape (both keep the per-element work to one add/FMA in the MMA accumulator layout, unlike a score_mod, which
issues two gathers for every logit):

* ``ROW_ALIGNED`` (``k_w`` in 32/64/128, SAM's global attention: 64x64 keys): the key block is one row of the key
  grid (``BLOCK_N == k_w``), so ``j % k_w`` is the same ``0..k_w-1`` in every block: the ``rel_w`` tile is loaded
  once per program and reused for all ``k_h`` blocks, and ``j // k_w`` is the block index: one ``rel_h`` column
  (``BLOCK_M`` values) per block, broadcast along the row. No gathers, no extra tensor-core work.
* otherwise (SAM's 14x14 windows, any grid): the bias tile is a small matmul on the tensor cores,
  ``rel_h_tile @ onehot(j // k_w) + rel_w_tile @ onehot(j % k_w)`` with ``rel_h_tile`` (``BLOCK_M x k_h``) and
  ``rel_w_tile`` loaded once per program and the one-hot matrices built from the key indices in registers. The
  products are exact (one non-zero term per column, fp32 accumulation) and land directly in the accumulator layout
  of ``q @ k^T``; for ``k_h = k_w = 14`` the extra MMA has K = 2 x 16, half of ``q @ k^T`` at D = 64. Gathering
  ``BLOCK_M x BLOCK_N`` elements instead would go through the load/store units twice per logit, which is what
  makes the plain score_mod slow.

Head dims that are not powers of two (80) are padded to the next one with masked loads (zeros add nothing to the
dot products); query and key positions past ``L`` (196 is no multiple of any block) are masked.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import triton_interpreting
from lowbit_flex.kernels.common import LaunchConfig, PlanLaunch, cached_plan, dot_acc

# Kernels may read only constexpr globals (a plain float fails to compile on the GPU; the interpreter allows it).
_LOG2E = tl.constexpr(1.4426950408889634)


# Fixed launch configurations (block_n is replaced by k_w in ROW_ALIGNED mode; block_k is unused: the head dim is
# one tile) for sm_90 (H100/H200), keyed by (padded head dim, L > 256): no autotuning, so the
# first call compiles once and runs. Chosen from the launch-config sweep of benchmarks/bench_rel_pos_attention.py
# on an H200 (2026-11-22, bf16, ms): global attention (L = 4096, row-aligned k_w = 64) is fastest with 64-query
# blocks, 4 warps and 3 stages (vit_b 1.27 vs 1.60 for the first guess of 128 x 8 warps; vit_h, D = 80 padded to
# 128: 2.63 vs 3.54); SAM's 196-token windows with 128-query blocks, 8 warps, 3 stages (vit_b 0.190 vs 0.214;
# vit_h 0.464 vs 0.944). D = 256 is untimed (no SAM model uses it): the smallest tiles, to stay within registers.
SM90_CONFIGS: dict[tuple[int, bool], LaunchConfig] = {
    (64, False): LaunchConfig(128, 64, 0, 8, 3),
    (128, False): LaunchConfig(128, 64, 0, 8, 3),
    (256, False): LaunchConfig(64, 32, 0, 4, 1),
    (64, True): LaunchConfig(64, 64, 0, 4, 3),
    (128, True): LaunchConfig(64, 64, 0, 4, 3),
    (256, True): LaunchConfig(64, 64, 0, 8, 1),
}
_ROW_ALIGNED_K_W = (32, 64, 128)


def pick_config(head_dim: int, seq_len: int) -> LaunchConfig:
    block_d = max(16, triton.next_power_of_2(head_dim))
    return SM90_CONFIGS[(block_d if block_d > 64 else 64, bool(seq_len > 256))]  # bool(): a guard on a SymInt L


@triton.jit
def _load_tile(ptrs, row_ok, col_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """Masked 2-D load; a constexpr-false side drops its mask, so full tiles load unmasked (vectorised)."""
    if MASK_ROWS and MASK_COLS:
        x = tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    elif MASK_ROWS:
        x = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    elif MASK_COLS:
        x = tl.load(ptrs, mask=col_ok[None, :], other=0.0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _rel_pos_attention_kernel(
    q_ptr, k_ptr, v_ptr, rh_ptr, rw_ptr, o_ptr,
    sq_b, sq_h, sq_l, sq_d, sk_b, sk_h, sk_l, sk_d, sv_b, sv_h, sv_l, sv_d,
    srh_b, srh_h, srh_l, srw_b, srw_h, srw_l,
    H, L, num_m_blocks, qk_scale,
    D: tl.constexpr, K_H: tl.constexpr, K_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, KH_P: tl.constexpr, KW_P: tl.constexpr,
    ROW_ALIGNED: tl.constexpr, MASK_N: tl.constexpr, MASK_M: tl.constexpr, PAD_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    # Query blocks of one (batch, head) are consecutive programs, so they share K/V in L2.
    pid = tl.program_id(0)
    pid_m = pid % num_m_blocks
    pid_bh = pid // num_m_blocks
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = q_ptr + b * sq_b + h * sq_h
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < L
    d_ok = offs_d < D
    q = _load_tile(q_base + offs_m[:, None] * sq_l + offs_d[None, :] * sq_d, m_ok, d_ok, MASK_M, PAD_D)
    rh_rows = rh_ptr + b * srh_b + h * srh_h + offs_m * srh_l
    rw_rows = rw_ptr + b * srw_b + h * srw_h + offs_m * srw_l
    if ROW_ALIGNED:
        # Key block n is key-grid row n: column c of the block has j % k_w == c for every block.
        # Kept in the input dtype (half the registers of fp32; exact) and widened per block: ptxas showed the
        # fp32 tile pushing the D = 80 (padded 128) configs into spills.
        rel_w_tile = _load_tile(rw_rows[:, None] + tl.arange(0, BLOCK_N)[None, :], m_ok, m_ok, MASK_M, False)
    else:
        offs_kh = tl.arange(0, KH_P)
        offs_kw = tl.arange(0, KW_P)
        r_h = tl.load(rh_rows[:, None] + offs_kh[None, :], mask=m_ok[:, None] & (offs_kh < K_H)[None, :], other=0.0)
        r_w = tl.load(rw_rows[:, None] + offs_kw[None, :], mask=m_ok[:, None] & (offs_kw < K_W)[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start_n in range(0, L, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < L
        # ROW_ALIGNED: L is a multiple of BLOCK_N, so only the head-dim padding needs a mask.
        k = _load_tile(k_base + offs_d[:, None] * sk_d + offs_n[None, :] * sk_l, d_ok, n_ok, PAD_D, MASK_N)
        s = dot_acc(q, k, None, UPCAST, DOT_PRECISION) * qk_scale
        if ROW_ALIGNED:
            if MASK_M:
                bias_h = tl.load(rh_rows + start_n // BLOCK_N, mask=m_ok, other=0.0)
            else:
                bias_h = tl.load(rh_rows + start_n // BLOCK_N)
            bias = bias_h.to(tl.float32)[:, None] + rel_w_tile.to(tl.float32)
            s = s + bias * _LOG2E  # L == k_h * k_w is a multiple of BLOCK_N: no key mask
        else:
            key_row = offs_n // K_W
            key_col = offs_n - key_row * K_W
            onehot_h = tl.where(offs_kh[:, None] == key_row[None, :], 1.0, 0.0).to(r_h.dtype)
            onehot_w = tl.where(offs_kw[:, None] == key_col[None, :], 1.0, 0.0).to(r_w.dtype)
            bias = dot_acc(r_w, onehot_w, dot_acc(r_h, onehot_h, None, UPCAST, DOT_PRECISION), UPCAST, DOT_PRECISION)
            s = tl.where(n_ok[None, :], s + bias * _LOG2E, float("-inf"))
        # Every block holds at least one valid key (blocks start below L), so m_new is finite.
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _load_tile(v_base + offs_n[:, None] * sv_l + offs_d[None, :] * sv_d, n_ok, d_ok, MASK_N, PAD_D)
        acc = dot_acc(p.to(v.dtype), v, acc * alpha[:, None], UPCAST, DOT_PRECISION)
        m_i = m_new
    out = acc / l_i[:, None]
    o_rows = o_ptr + pid_bh.to(tl.int64) * L * D + offs_m[:, None] * D + offs_d[None, :]
    tl.store(o_rows, out.to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :])


@functools.lru_cache(maxsize=512)
def _launch_plan(
    B: int, H: int, L: int, D: int, k_h: int, k_w: int, dtype: torch.dtype, config: LaunchConfig | None, *strides: int
) -> PlanLaunch:
    """The launch for one shape key: grid, tiles and constexprs. ``strides`` (q, k, v, then the first three of
    rel_h and rel_w) are part of the key only: the kernel is specialized on its integer arguments, so a cached
    direct launch is right only for the strides it was compiled with."""
    cfg = config or pick_config(D, L)
    row_aligned = k_w in _ROW_ALIGNED_K_W
    block_m = cfg.block_m
    block_d = max(16, triton.next_power_of_2(D))
    num_m_blocks = triton.cdiv(L, block_m)
    meta = dict(
        D=D, K_H=k_h, K_W=k_w,
        BLOCK_M=block_m, BLOCK_N=k_w if row_aligned else cfg.block_n, BLOCK_D=block_d,
        KH_P=max(16, triton.next_power_of_2(k_h)), KW_P=max(16, triton.next_power_of_2(k_w)),
        ROW_ALIGNED=row_aligned, MASK_N=not row_aligned, MASK_M=bool(L % block_m != 0),
        PAD_D=block_d != D, DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32",
        UPCAST=triton_interpreting(),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return PlanLaunch(_rel_pos_attention_kernel, (num_m_blocks * B * H,), meta)


def rel_pos_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float | None = None,
    *,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """Launch the fused kernel. Arguments are validated by the op: q/k/v ``(B, H, L, D)`` of one dtype, rel_h/rel_w
    ``(B, H, L, k_h)``/``(B, H, L, k_w)`` in that dtype with ``L == k_h * k_w``. ``config`` overrides the table
    (the benchmark's sweep uses it).

    Everything but the tensors is decided once per shape key (:func:`_launch_plan`): eager calls then launch the
    compiled kernel directly, and ``torch.compile`` traces the launch (``wrap_triton``). Head dim and key grid are
    constexprs, so under dynamic-shape tracing they are specialized (``int()``: a guard, not a SymInt)."""
    B, H, L = q.shape[:3]
    D, k_h, k_w = int(q.shape[3]), int(rel_h.shape[-1]), int(rel_w.shape[-1])
    # The kernel reads rel rows with unit stride (SAM's einsum output already is).
    rel_h = rel_h if rel_h.stride(-1) == 1 else rel_h.contiguous()
    rel_w = rel_w if rel_w.stride(-1) == 1 else rel_w.contiguous()
    out = torch.empty((B, H, L, D), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    strides = (*q.stride(), *k.stride(), *v.stride(), *rel_h.stride()[:3], *rel_w.stride()[:3])
    launch = cached_plan(_launch_plan, B, H, L, D, k_h, k_w, q.dtype, config, *strides)
    s = 1.0 / math.sqrt(D) if scale is None else scale
    num_m_blocks = triton.cdiv(L, launch.meta["BLOCK_M"])
    launch(q, k, v, rel_h, rel_w, out, *strides, H, L, num_m_blocks, s * _LOG2E.value)
    return out
