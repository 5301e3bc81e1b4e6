"""fp4 / fp6 weight-only linear at prefill sizes on Hopper, in Gluon: ``out = x @ (decode(w) * s).T + b`` with the
decoded weight in shared memory, so both WGMMA operands are there and the WGMMAs run asynchronously.

Why not the Triton tiles of :mod:`~lowbit_flex.kernels.float_weight_tma`: they keep the decoded weight in registers
as WGMMA's A operand, and Triton 3.6's ptxas (12.8) either serializes those WGMMAs or, pipelined, lets the next
step's decode overwrite registers an in-flight WGMMA still reads (triton-lang/triton#9433). Serialized, they ran
0.63-0.97x bf16 at M = 64-1024 (H200 run 41). Writing the decoded tile to shared memory instead (Triton's own
non-swapped tile, run 18) made Triton wait for each WGMMA. Here the kernel controls that wait:

* Every step covers one 128-code tile of the weight (the tile layout of :mod:`lowbit_flex.quant.fpx_tiles`): TMA
  brings ``x``'s ``(BLOCK_M, 128)`` box and the weight's ``(BLOCK_N, 16)`` hi words (fp6: and 8 lo words) into a
  ring slot, with one mbarrier per slot.
* The warps decode the words in registers (PTX, two codes per instruction; for bf16 ``x`` straight to bf16,
  :func:`~lowbit_flex.kernels.float_weight_decode.planes_asm`; both forms times ``2^(bias - 15)``, undone in the
  epilogue), join the eight 16-code planes into the tile's K order and store the ``(BLOCK_N, 128)`` tile into one
  of two shared buffers.
* ``warpgroup_mma(x_slot, decoded.T)`` is issued asynchronously and the kernel waits only for the previous step's:
  step ``i + 1``'s TMA wait and decode run while step ``i``'s WGMMAs do.
* Hazards, with any number of warpgroups: a CTA barrier after the stores (every warp's part of the tile is written
  before a WGMMA reads it) and one after the wait (every warpgroup's step ``i - 1`` WGMMAs are complete). After the
  second, step ``i - 1``'s ring slot and step ``i + 1``'s decoded buffer (last read at ``i - 1``) are free, and the
  slot is refilled with step ``i + STAGES - 1``.
* Split-K where the output tiles leave SMs idle (float32 partials, reduced in split order by the shared reduce
  kernel), grouped tile order for L2 reuse of a weight tile, the epilogue of the Triton tiles.

Measured on the H200 (run 45, docs/measurements/h200_run45_gluon_weight_only.md): at M = 17-64 (weight-bound)
the 64-row tiles run fp4 at 0.85-1.21x bf16 and fp6 at 0.71-0.95x, against 0.65-0.97x for the serialized Triton
tile, so the dispatch table takes them there. From M = 256 on every config is slower than the table's other rules
(0.26-0.78x). A warp-specialized form without CTA barriers measured the same (call 6). A decoded tile that goes
through shared memory costs more bandwidth than the WGMMAs leave (~168 KB per 128 x 128 x 128 step), so compute-bound
sizes need the decoded weight in registers (WGMMA's A operand), which Triton's bundled ptxas does not pipeline
correctly.

Scope: sm_90, TMA-aligned ``x`` and words (the dispatch's ``tma_supported``), fp4 / fp6 codes. The launch's
arguments are those of the Triton TMA kernel, which runs instead where only ``wrap_triton`` may launch (traced calls,
the interpreter): :class:`~lowbit_flex.kernels.common.PlanLaunch`'s ``traced`` plan.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from lowbit_flex.kernels.common import grouped_tile
from lowbit_flex.kernels.float_weight_tma import TmaConfig
from lowbit_flex.kernels.gluon_sm90 import cta_barrier, smem_layout, tma_load
from lowbit_flex.quant import fpx_tiles

TILE_CODES = gl.constexpr(fpx_tiles.TILE_CODES)  # codes per row of one weight tile
DECODED_BUFFERS = gl.constexpr(2)  # decoded tiles in shared memory: the one being written, the one a WGMMA reads


@gluon.constexpr_function
def _plane_types(dtype):
    """The inline PTX's 8 result types (a jit function cannot build the tuple: its items would be constexprs)."""
    return (dtype,) * 8


@gluon.jit
def _issue_step(
    x_desc, hi_desc, lo_desc, x_smem, hi_smem, lo_smem, ready, step, t_first, m0, n0, BITS: gl.constexpr,
    STAGES: gl.constexpr,
):  # fmt: skip
    """TMA loads of step ``step`` (weight tile ``t_first + step``) into ring slot ``step % STAGES``."""
    TILE_WORDS: gl.constexpr = 16 if BITS == 4 else 24
    slot = step % STAGES
    bar = ready.index(slot)
    t = t_first + step
    if BITS == 6:
        mbarrier.expect(bar, x_desc.block_type.nbytes + hi_desc.block_type.nbytes + lo_desc.block_type.nbytes)
    else:
        mbarrier.expect(bar, x_desc.block_type.nbytes + hi_desc.block_type.nbytes)
    tma_load(x_desc, [m0, t * TILE_CODES], bar, x_smem.index(slot))
    tma_load(hi_desc, [n0, t * TILE_WORDS], bar, hi_smem.index(slot))
    if BITS == 6:
        tma_load(lo_desc, [n0, t * TILE_WORDS + 16], bar, lo_smem.index(slot))


@gluon.jit
def _decode_tile(
    hi_slot, lo_slot, word_layout: gl.constexpr, lo_layout: gl.constexpr, X_DTYPE: gl.constexpr, BITS: gl.constexpr,
    BLOCK_N: gl.constexpr, ASM: gl.constexpr, CONS: gl.constexpr,
):  # fmt: skip
    """One ring slot's weight tile as ``(BLOCK_N, 128)`` values of ``X_DTYPE`` in K order (fp16: times
    ``2^(bias - 15)``; bf16: exact)."""
    hi = hi_slot.load(word_layout)
    if BITS == 6:
        # word w's low bit pairs sit in lo word w % 8, 8 bits higher for w >= 8 (fpx_tiles): widen the 8 lo words
        # to 16, word w = lo[w % 8] >> 8 * (w // 8), as the PTX takes them.
        lo8 = lo_slot.load(lo_layout)
        lo = gl.reshape(gl.permute(gl.join(lo8, lo8 >> 8), (0, 2, 1)), (BLOCK_N, 16))
        lo = gl.convert_layout(lo, word_layout)
        p = gl.inline_asm_elementwise(ASM, CONS, [hi, lo], dtype=_plane_types(X_DTYPE), is_pure=True, pack=1)
    else:
        p = gl.inline_asm_elementwise(ASM, CONS, [hi], dtype=_plane_types(X_DTYPE), is_pure=True, pack=1)
    # plane q holds the codes 16 q .. 16 q + 15 of each row: side by side they are the tile in K order
    j0 = gl.join(gl.join(p[0], p[1]), gl.join(p[2], p[3]))  # (BLOCK_N, 16, b0, b1)
    j1 = gl.join(gl.join(p[4], p[5]), gl.join(p[6], p[7]))
    j = gl.join(j0, j1)  # (BLOCK_N, 16, b0, b1, b2): plane b0 + 2 b1 + 4 b2
    return gl.reshape(gl.permute(j, (0, 4, 3, 2, 1)), (BLOCK_N, TILE_CODES))


@gluon.jit
def _float_weight_gemm_sm90(
    x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, part_ptr,
    M, N, K, KW, stride_xm, stride_wn, stride_om, TILES_PER_SPLIT,
    BITS: gl.constexpr, DEC_SCALE: gl.constexpr, ASM: gl.constexpr, CONS: gl.constexpr,
    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr,
    SPLIT_PARTIALS: gl.constexpr, HAS_BIAS: gl.constexpr,
):  # fmt: skip
    """One ``(BLOCK_M, BLOCK_N)`` output tile over split ``program_id(1)``'s K tiles (see the module docstring);
    ``BLOCK_M / 16`` warps, one warpgroup per 64 rows."""
    NUM_WARPS: gl.constexpr = gl.num_warps()
    X_DTYPE: gl.constexpr = x_ptr.dtype.element_ty
    pid_m, pid_n = grouped_tile(gl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)  # scalar math: Gluon may call it
    pid_k = gl.program_id(1)
    m0 = pid_m * BLOCK_M
    n0 = pid_n * BLOCK_N
    t_first = pid_k * TILES_PER_SPLIT
    n_steps = gl.minimum(TILES_PER_SPLIT, gl.cdiv(K, TILE_CODES) - t_first)
    # No split is empty (split_k_blocks) and K >= 1. Told so, the compiler drops the loop's zero-trip path, whose
    # zeroed accumulator meeting the loop's result makes ptxas serialize every WGMMA (C7515).
    gl.assume(n_steps > 0)

    x_layout: gl.constexpr = smem_layout(TILE_CODES * 2, 16)
    hi_layout: gl.constexpr = smem_layout(64, 32)
    lo_layout_s: gl.constexpr = smem_layout(32, 32)
    x_desc = tma.make_tensor_descriptor(x_ptr, [M, K], [stride_xm, 1], [BLOCK_M, TILE_CODES], x_layout)
    hi_desc = tma.make_tensor_descriptor(w_ptr, [N, KW], [stride_wn, 1], [BLOCK_N, 16], hi_layout)
    lo_desc = hi_desc
    x_smem = gl.allocate_shared_memory(X_DTYPE, [STAGES, BLOCK_M, TILE_CODES], x_layout)
    hi_smem = gl.allocate_shared_memory(gl.int32, [STAGES, BLOCK_N, 16], hi_layout)
    lo_smem = hi_smem
    if BITS == 6:
        lo_desc = tma.make_tensor_descriptor(w_ptr, [N, KW], [stride_wn, 1], [BLOCK_N, 8], lo_layout_s)
        lo_smem = gl.allocate_shared_memory(gl.int32, [STAGES, BLOCK_N, 8], lo_layout_s)
    dec_smem = gl.allocate_shared_memory(X_DTYPE, [DECODED_BUFFERS, BLOCK_N, TILE_CODES], x_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for s in gl.static_range(STAGES):
        mbarrier.init(ready.index(s), count=1)
    fence_async_shared()

    # Registers: a thread decodes 4 consecutive words of a row (32 codes); the MMA's accumulator layout.
    word_layout: gl.constexpr = gl.BlockedLayout([1, 4], [8, 4], [NUM_WARPS, 1], [1, 0])
    lo_layout: gl.constexpr = gl.BlockedLayout([1, 2], [8, 4], [NUM_WARPS, 1], [1, 0])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(
        version=[3, 0], warps_per_cta=[NUM_WARPS, 1], instr_shape=[16, BLOCK_N, 16]
    )
    acc = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, acc_layout)

    for s in gl.static_range(STAGES - 1):
        if s < n_steps:
            _issue_step(x_desc, hi_desc, lo_desc, x_smem, hi_smem, lo_smem, ready, s, t_first, m0, n0, BITS, STAGES)
    for i in range(n_steps):
        slot = i % STAGES
        mbarrier.wait(ready.index(slot), (i // STAGES) & 1)
        dec = _decode_tile(hi_smem.index(slot), lo_smem.index(slot), word_layout, lo_layout, X_DTYPE, BITS, BLOCK_N,
                           ASM, CONS)  # fmt: skip
        buf = dec_smem.index(i % DECODED_BUFFERS)  # last read by step i - 2's WGMMAs: complete (barrier below)
        buf.store(dec)
        fence_async_shared()  # the stores, visible to the WGMMAs (async proxy) ...
        cta_barrier()  # ... of every warp
        tok = warpgroup_mma(x_smem.index(slot), buf.permute((1, 0)), acc, is_async=True)
        acc = warpgroup_mma_wait(1, deps=(tok,))  # this warpgroup's step i - 1 is done
        cta_barrier()  # every warpgroup's: slot (i - 1) % STAGES and buffer (i + 1) % 2 are free
        nxt = i + STAGES - 1
        if nxt < n_steps:
            _issue_step(x_desc, hi_desc, lo_desc, x_smem, hi_smem, lo_smem, ready, nxt, t_first, m0, n0, BITS,
                        STAGES)  # fmt: skip
    acc = warpgroup_mma_wait(0, deps=(acc,))
    for s in gl.static_range(STAGES):
        mbarrier.invalidate(ready.index(s))

    rm = m0 + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, acc_layout))
    rn = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, acc_layout))
    mask = gl.expand_dims(rm < M, 1) & gl.expand_dims(rn < N, 0)
    if SPLIT_PARTIALS:  # raw sums; the split-K reduce scales them
        rows = gl.expand_dims((pid_k * M + rm).to(gl.int64) * N, 1)
        gl.store(part_ptr + rows + gl.expand_dims(rn, 0), acc, mask=mask)
    else:
        n_ok = rn < N
        out = acc * gl.expand_dims(gl.load(scale_ptr + rn, mask=n_ok, other=0.0) * DEC_SCALE, 0)
        if HAS_BIAS:
            out += gl.expand_dims(gl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(gl.float32), 0)
        o_ptrs = out_ptr + gl.expand_dims(rm.to(gl.int64) * stride_om, 1) + gl.expand_dims(rn, 0)
        gl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)


# Configs (shared memory per CTA: ring slots of a (block_m, 128) x box and block_n rows of hi / lo words, plus two
# decoded (block_n, 128) tiles; 227 KiB at most on sm_90): num_warps = block_m / 16 (one warpgroup per 64 rows),
# num_stages = ring slots. Every config is compiled for sm_90 in tests/kernels/aot_cases.py, for Triton 3.6 and 3.9
# without WGMMA serialization (the --check-wgmma pass).
GLUON_CONFIGS: dict[str, TmaConfig] = {
    "gluon_64x64": TmaConfig(64, 64, 1, num_warps=4, num_stages=4, programs_per_sm=2),  # 112 KiB: two CTAs per SM
    "gluon_64x128": TmaConfig(64, 128, 1, num_warps=4, num_stages=3),  # 136 KiB
    "gluon_128x64": TmaConfig(128, 64, 1, num_warps=8, num_stages=4),  # 176 KiB
    "gluon_128x128": TmaConfig(128, 128, 1, num_warps=8, num_stages=3),  # 184 KiB (fp6: 196)
}


def traced_config(config: TmaConfig) -> TmaConfig:
    """The Triton TMA tile of the same output tile that runs where only ``wrap_triton`` may launch (traced calls,
    the interpreter): the same arguments, split included."""
    warps = 8 if config.block_m * config.block_n > 64 * 128 else 4
    return TmaConfig(config.block_m, config.block_n, 1, num_warps=warps, num_stages=3)
