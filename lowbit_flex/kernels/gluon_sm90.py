"""What the package's Gluon kernels for Hopper share: the shared-memory layout TMA writes and WGMMA reads, the TMA
load under the name this Triton version gives it, and the producer warp of the warp-specialized attention kernels."""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma

# Triton 3.6 (the GPU machine's) names the TMA load async_copy_global_to_shared; 3.9 renamed it async_load.
tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
# A CTA-wide barrier (bar.sync): Triton 3.6's thread_barrier, 3.9's barrier.
cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier


if hasattr(gl.shared_memory_descriptor, "reinterpret"):  # Triton 3.9

    @gluon.jit
    def smem_view(desc, shape: gl.constexpr, layout: gl.constexpr):
        """The same shared memory as another shape and layout (Triton 3.6: ``_reinterpret``; 3.9: ``reinterpret``)."""
        return desc.reinterpret(desc.dtype, shape, layout)

else:

    @gluon.jit
    def smem_view(desc, shape: gl.constexpr, layout: gl.constexpr):
        """The same shared memory as another shape and layout (Triton 3.6: ``_reinterpret``; 3.9: ``reinterpret``)."""
        return desc._reinterpret(desc.dtype, shape, layout)


@gluon.constexpr_function
def smem_layout(row_bytes, bitwidth):
    """The NVMMA shared layout TMA writes and WGMMA reads for rows of ``row_bytes`` bytes."""
    swizzle = 128 if row_bytes % 128 == 0 else (64 if row_bytes % 64 == 0 else 32)
    return gl.NVMMASharedLayout(swizzle_byte_width=swizzle, element_bitwidth=bitwidth, rank=2)


# Warp-specialized attention (fp8_attention_sm90, rel_pos_attention_sm90): one program's query rows are two or three
# consumer warpgroups of WS_ROWS each and one TMA producer warp (which takes a warpgroup's register share).
WS_ROWS = gl.constexpr(64)  # query rows per consumer warpgroup (one m64 WGMMA row block)
# Registers per thread of each consumer warpgroup after the first (setmaxnreg), by consumer count; the producer's
# warpgroup keeps 24 and the default partition (the first consumer) takes the rest of the 64K:
# 128 * (256 + 232 + 24) = 65536 with two consumers, 128 * (168 + 2 * 160 + 24) with three.
WS_CONSUMER_REGS = {2: 232, 3: 160}


@gluon.jit
def _load_kv_block(k_desc, v_desc, k_dst, v_dst, bar, first_key, V_TOKEN_MAJOR: gl.constexpr, pred=True):
    """Key/value block from ``first_key`` into ``k_dst`` / ``v_dst``, counted on ``bar`` (``V_TOKEN_MAJOR``: v's
    descriptor is ``(D, keys)``)."""
    tma_load(k_desc, [first_key, 0], bar, k_dst, pred=pred)
    if V_TOKEN_MAJOR:
        tma_load(v_desc, [0, first_key], bar, v_dst, pred=pred)
    else:
        tma_load(v_desc, [first_key, 0], bar, v_dst, pred=pred)


@gluon.jit
def load_q_then_kv_ring(
    q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, ready, empty, m0, n_blocks,
    KEYS_PER_BLOCK: gl.constexpr, STAGES: gl.constexpr, V_TOKEN_MAJOR: gl.constexpr, CONSUMERS: gl.constexpr,
):  # fmt: skip
    """The producer warp of a warp-specialized attention program: each consumer's q rows (``m0 + WS_ROWS * c``), then
    key/value block ``j`` (keys from ``j * KEYS_PER_BLOCK``) into ring slot ``j % STAGES`` as soon as every consumer
    has released the block ``STAGES`` before it. Each slot has a "ready" mbarrier (TMA bytes) and an "empty" one (one
    arrival per consumer). ``V_TOKEN_MAJOR``: v's descriptor is ``(D, keys)``."""
    mbarrier.expect(q_bar, CONSUMERS * q_desc.block_type.nbytes)
    for c in gl.static_range(CONSUMERS):
        tma_load(q_desc, [m0 + c * WS_ROWS, 0], q_bar, q_smem.index(c))
    for j in range(n_blocks):
        slot = j % STAGES
        mbarrier.wait(empty.index(slot), ((j // STAGES) & 1) ^ 1, pred=j >= STAGES)
        bar = ready.index(slot)
        mbarrier.expect(bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
        _load_kv_block(k_desc, v_desc, k_smem.index(slot), v_smem.index(slot), bar, j * KEYS_PER_BLOCK, V_TOKEN_MAJOR)


@gluon.jit
def chunk_rows(chunk, heads, CHUNKS: gl.constexpr):
    """``(head, first row)`` of query chunk ``chunk`` (``WS_ROWS`` rows) in the sequence of every head's ``CHUNKS``
    chunks, head after head. Chunks past the last head's map to rows past its end (rows >= L: TMA reads zeros, the
    stores are masked)."""
    head = gl.minimum(chunk // CHUNKS, heads - 1)
    return head, (chunk - head * CHUNKS) * WS_ROWS


@gluon.jit
def load_q_then_kv_ring_two_heads(
    q_desc, k_desc, v_desc, q_desc_b, k_desc_b, v_desc_b, q_smem, k_smem, v_smem, q_bar, ready, empty, chunk0,
    heads, n_blocks, CHUNKS: gl.constexpr, KEYS_PER_BLOCK: gl.constexpr, STAGES: gl.constexpr,
    V_TOKEN_MAJOR: gl.constexpr, CONSUMERS: gl.constexpr,
):  # fmt: skip
    """:func:`load_q_then_kv_ring` (``CHUNKS = 0``: ``chunk0`` is the first row, the ``_b`` descriptors unused), or
    for a program whose consumers take query chunks ``chunk0 ...`` of the sequence of :func:`chunk_rows`, so that
    its rows may belong to two heads: the first chunk's (descriptors ``q_desc``...) and, from some consumer on, the
    next one's (``q_desc_b``...; the same head where the program holds one). Where it holds two, each ring slot
    ``s`` takes both heads' key/value blocks, the second head's in slot ``s + STAGES`` of ``k_smem`` / ``v_smem``,
    counted on the same "ready" barrier."""
    if CHUNKS == 0:
        load_q_then_kv_ring(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, ready, empty, chunk0, n_blocks,
                            KEYS_PER_BLOCK, STAGES, V_TOKEN_MAJOR, CONSUMERS)  # fmt: skip
    else:
        head_a = chunk0 // CHUNKS
        last_head, _ = chunk_rows(chunk0 + CONSUMERS - 1, heads, CHUNKS)
        one, two = last_head == head_a, last_head != head_a
        mbarrier.expect(q_bar, CONSUMERS * q_desc.block_type.nbytes)
        for c in gl.static_range(CONSUMERS):
            head, row = chunk_rows(chunk0 + c, heads, CHUNKS)
            tma_load(q_desc, [row, 0], q_bar, q_smem.index(c), pred=head == head_a)
            tma_load(q_desc_b, [row, 0], q_bar, q_smem.index(c), pred=head != head_a)
        kv_bytes: gl.constexpr = k_desc.block_type.nbytes + v_desc.block_type.nbytes
        for j in range(n_blocks):
            slot = j % STAGES
            mbarrier.wait(empty.index(slot), ((j // STAGES) & 1) ^ 1, pred=j >= STAGES)
            bar = ready.index(slot)
            mbarrier.expect(bar, kv_bytes, pred=one)
            mbarrier.expect(bar, 2 * kv_bytes, pred=two)
            first_key = j * KEYS_PER_BLOCK
            _load_kv_block(k_desc, v_desc, k_smem.index(slot), v_smem.index(slot), bar, first_key, V_TOKEN_MAJOR)
            _load_kv_block(
                k_desc_b, v_desc_b, k_smem.index(slot + STAGES), v_smem.index(slot + STAGES), bar, first_key,
                V_TOKEN_MAJOR, pred=two,
            )  # fmt: skip
