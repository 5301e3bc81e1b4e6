import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.ops import rel_pos_attention
from lowbit_flex.testing import assert_fully_written, assert_rel_error, kernel_device, poison_

OP = torch.ops.lowbit.rel_pos_attention


def _inputs(b, h, k_h, k_w, d, dtype, device="cpu"):
    n = k_h * k_w
    q, k, v = (torch.randn(b, h, n, d, dtype=dtype, device=device) for _ in range(3))
    # SAM-like bias magnitudes: rel_h/rel_w are q @ table products, O(1) to a few units.
    rh = (torch.randn(b, h, n, k_h, device=device) * 2).to(dtype)
    rw = (torch.randn(b, h, n, k_w, device=device) * 2).to(dtype)
    return q, k, v, rh, rw


def _reference_f64(q, k, v, rel_h, rel_w, scale=None):
    """The definition in float64, with the bias gathered by explicit key (row, column) indices."""
    k_w = rel_w.shape[-1]
    j = torch.arange(k.shape[-2], device=q.device)
    bias = rel_h.double()[..., j // k_w] + rel_w.double()[..., j % k_w]
    s = scale if scale is not None else q.shape[-1] ** -0.5
    logits = q.double() @ k.double().transpose(-1, -2) * s + bias
    return torch.softmax(logits, -1) @ v.double()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2), (torch.float16, 1e-2)])
@pytest.mark.parametrize("b, h, k_h, k_w, d", [(1, 2, 5, 7, 16), (2, 3, 4, 4, 80), (1, 1, 14, 14, 64)])
def test_reference_matches_float64_definition(b, h, k_h, k_w, d, dtype, tol):
    q, k, v, rh, rw = _inputs(b, h, k_h, k_w, d, dtype)
    out = rel_pos_attention(q, k, v, rh, rw)
    assert out.dtype == dtype and out.shape == q.shape and out.is_contiguous()
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw), tol)
    assert_rel_error(OP(q, k, v, rh, rw, 0.3), _reference_f64(q, k, v, rh, rw, 0.3), tol)


def test_sam_layouts_and_non_contiguous_inputs():
    b, h, k_h, k_w, d = 2, 3, 3, 5, 16
    q, k, v, rh, rw = _inputs(b, h, k_h, k_w, d, torch.float32)
    ref = rel_pos_attention(q, k, v, rh, rw)
    flat = rh.reshape(b * h, 15, k_h), rw.reshape(b * h, 15, k_w)
    five = rh.reshape(b * h, 3, 5, k_h)[..., None], rw.reshape(b * h, 3, 5, k_w)[:, :, :, None, :]
    for rel in (flat, five):
        torch.testing.assert_close(rel_pos_attention(q, k, v, *rel), ref, rtol=0, atol=0)
    q_t = q.transpose(1, 2).contiguous().transpose(1, 2)  # (B, L, H, D) storage, as SAM's qkv reshape gives
    torch.testing.assert_close(rel_pos_attention(q_t, k, v, rh, rw), ref, rtol=0, atol=0)


def _bad_cases():
    q, k, v, rh, rw = _inputs(2, 3, 4, 5, 16, torch.bfloat16)
    big_h, big_w = torch.randn(1, 1, 257, 257, dtype=torch.bfloat16), torch.randn(1, 1, 257, 1, dtype=torch.bfloat16)
    big_q = torch.randn(1, 1, 257, 16, dtype=torch.bfloat16)
    return [
        ((q.int(), k, v, rh, rw), TypeError, "q: expected dtype"),
        ((q[0], k, v, rh, rw), ValueError, "q: expected 4 dimensions"),
        ((q, k.half(), v, rh, rw), ValueError, "k: expected dtype torch.bfloat16"),
        ((q, k, v[:, :, :10], rh, rw), ValueError, "v: expected shape"),
        ((q, k, v.to("meta"), rh, rw), ValueError, "v: expected a tensor on cpu"),
        ((q, k, v, rh.float(), rw.float()), ValueError, "rel_h: expected dtype torch.bfloat16"),
        ((q, k, v, rh, rw.float()), ValueError, "rel_w: expected dtype"),
        ((q, k, v, rh.to("meta"), rw.to("meta")), ValueError, "rel_h: expected a tensor on cpu"),
        ((q, k, v, rh[:1], rw[:1]), ValueError, "rel_h: batch and heads"),
        ((q, k, v, rh[:, :2], rw[:, :2]), ValueError, "rel_h: batch and heads"),
        ((q, k, v, rh[..., :3], rw), ValueError, "rel_h: expected Lq = k_h \\* k_w"),
        ((q, k, v, rh.reshape(2, 3, 4, 5, 4), rw), ValueError, "rel_h, rel_w: expected"),
        ((q, k, v, rh.reshape(3, 2, 20, 4), rw.reshape(3, 2, 20, 5)), ValueError, "rel_h: batch and heads"),
        ((q, k, v, rh.reshape(6, 20, 4)[:4], rw.reshape(6, 20, 5)[:4]), ValueError, "not a multiple of num_heads"),
        ((*(torch.randn(2, 3, 20, 300, dtype=torch.bfloat16),) * 3, rh, rw), ValueError, "q: expected a head dim"),
        ((big_q, big_q, big_q, big_h, big_w), ValueError, "expected k_h, k_w <= 256"),
        ((q, k, v, rh, rw, -1.0), ValueError, "scale: expected a finite positive"),
        ((q, k, v, rh, rw, float("nan")), ValueError, "scale: expected a finite positive"),
    ]


@pytest.mark.parametrize("args, exc, match", _bad_cases())
def test_bad_input_eager_fake_and_compiled(args, exc, match):
    with pytest.raises(exc, match=match):
        OP(*args)
    with pytest.raises(exc, match=match):
        rel_pos_attention(*args)
    if not any(isinstance(a, torch.Tensor) and a.device.type == "meta" for a in args):
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
            OP(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
    # Default torch.compile (fullgraph=False): the wrapper's checks are traced and the error leaves unwrapped.
    compiled = torch.compile(lambda *a: rel_pos_attention(*a), backend="aot_eager")
    with pytest.raises(exc, match=match):
        compiled(*args)


def test_compiled_wrapper_matches_eager():
    q, k, v, rh, rw = _inputs(1, 2, 3, 4, 16, torch.float32)
    compiled = torch.compile(lambda *a: rel_pos_attention(*a), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, rh, rw), rel_pos_attention(q, k, v, rh, rw), rtol=0, atol=0)


# ---- Triton kernel (CUDA, or the interpreter on CPU tensors) -------------------------------------------------------

needs_kernel = pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")


def _run_kernel_poisoned(monkeypatch, q, k, v, rel_h, rel_w, scale=None, config=None):
    """Launch with the output pre-filled with NaN and check every element was written."""
    from lowbit_flex.kernels import rel_pos_attention as mod
    from lowbit_flex.score_mods._rel_pos_layout import normalize_rel_pos

    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))
    rel = normalize_rel_pos(rel_h, rel_w, num_heads=q.shape[1])
    out = mod.rel_pos_attention_triton(q, k, v, rel.rel_h, rel.rel_w, scale, config=config)
    assert_fully_written(out)
    return out


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b, h, k_h, k_w, d", [
    (1, 2, 5, 7, 16),  # one partial key block, batch 1
    (1, 2, 5, 7, 80),  # head dim split 64 + 16
    (2, 1, 10, 14, 16),  # three key blocks, the last partial: 140 keys
    (1, 2, 3, 32, 64),  # ROWS: key blocks are key-grid rows; 96 queries: a partial query block
])  # fmt: skip
def test_kernel_matches_float64_and_writes_everything(monkeypatch, b, h, k_h, k_w, d, dtype):
    """The table's config for each shape (whatever ``pick_config`` chooses)."""
    q, k, v, rh, rw = _inputs(b, h, k_h, k_w, d, dtype, kernel_device())
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw)
    assert out.dtype == dtype and out.shape == q.shape
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw), 1e-2)


@needs_kernel
@pytest.mark.parametrize("d", [64, 80, 128])
@pytest.mark.parametrize("k_h, k_w", [(14, 14), (64, 64), (48, 40), (7, 9), (1, 37)])
def test_kernel_issue_grids_batch_1(monkeypatch, k_h, k_w, d):
    """The table's config on SAM's window and global grids, a non-square image grid, a small odd grid and a 1 x N
    row, batch 1, every SAM head dim (the interpreter runs the long grids at one head dim each: 30-70 s apiece)."""
    if kernel_device() == "cpu" and (k_h, k_w, d) in {(64, 64, 80), (64, 64, 128), (48, 40, 64), (48, 40, 128)}:
        pytest.skip("long grid under the interpreter: one head dim per grid (all run on the GPU)")
    q, k, v, rh, rw = _inputs(1, 1, k_h, k_w, d, torch.bfloat16, kernel_device())
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw)
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw), 1e-2)


def _config(m, n, bias: str, split=True):
    from lowbit_flex.kernels.rel_pos_attention import Bias, RelPosConfig

    return RelPosConfig(m, n, 0, 4, 1, Bias[bias], split)


@needs_kernel
@pytest.mark.parametrize("k_h, k_w, d, m, n, bias, split", [
    (14, 14, 64, 32, 32, "ROWS", True),  # 2 padded rows of 16 slots per block: 7 blocks
    (14, 14, 16, 32, 64, "ROWS", True),  # 4 rows per block, k_h % 4 != 0: the last block's rows 14, 15 masked
    (5, 7, 80, 16, 16, "ROWS", True),  # 7 of 8 slots, 2 rows per block; head dim split 64 + 16
    (14, 14, 80, 32, 32, "ONEHOT", True),  # [rel_h | rel_w] one MMA with K = 32; split head dim
    (14, 14, 80, 32, 32, "ONEHOT", False),  # head dim padded 80 -> 128
    (24, 5, 40, 32, 32, "ONEHOT", True),  # k_h > 16: a 16-row rel_h window per block; 40 = 32 + 16 (padded 8)
    (3, 40, 96, 16, 64, "ONEHOT", True),  # k_w = 40: K = 3 + 40 -> 64; 96 = 64 + 32 (no padding)
    (2, 64, 64, 32, 128, "ROWS", True),  # a block holds 2 rows of the 64-wide grid (block_n above k_w)
])  # fmt: skip
def test_kernel_bias_modes_and_head_dim_tiles(monkeypatch, k_h, k_w, d, m, n, bias, split):
    """Every bias formation and head-dim tiling against float64, with explicit configs (the table picks only some)."""
    q, k, v, rh, rw = _inputs(1, 2, k_h, k_w, d, torch.bfloat16, kernel_device())
    config = _config(m, n, bias, split)
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw, scale=0.15, config=config)
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw, 0.15), 1e-2)


@needs_kernel
def test_kernel_without_bias_is_plain_attention(monkeypatch):
    """``Bias.NONE`` (the benchmark's floor for this kernel) is softmax(q k^T s) v: the bias tables are ignored."""
    q, k, v, rh, rw = _inputs(1, 2, 6, 9, 80, torch.bfloat16, kernel_device())
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw, config=_config(32, 32, "NONE"))
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) * 80**-0.5, -1) @ v.double()
    assert_rel_error(out, ref, 1e-2)


@pytest.mark.parametrize(
    "d, tiles",
    [
        (16, (16, 0)),
        (64, (64, 0)),
        (80, (64, 16)),
        (96, (64, 32)),
        (40, (32, 16)),
        (112, (128, 0)),
        (24, (32, 0)),
        (8, (16, 0)),
        (200, (256, 0)),
        (256, (256, 0)),
    ],
)
def test_head_dim_tiles(d, tiles):
    """A split saves padding or is not taken; tiles are powers of two of at least 16 covering d."""
    from lowbit_flex.kernels.rel_pos_attention import head_dim_tiles

    assert head_dim_tiles(d, True) == tiles
    assert head_dim_tiles(d, False)[1] == 0


@pytest.mark.parametrize(
    "k_h, k_w, tiles", [(14, 14, (64, 16)), (1, 37, (128, 0)), (64, 64, (64, 16)), (2, 160, (64, 16))]
)
def test_plan_splits_the_head_dim_only_over_several_key_blocks(k_h, k_w, tiles):
    """D = 80 splits into 64 + 16 unless the whole key range is one block (1 x 37: one padded 64-slot row), where the
    split tile's accumulator came out wrong on the H200 and the plan pads to 128 instead."""
    from lowbit_flex.kernels.rel_pos_attention import _launch_plan

    L = k_h * k_w
    meta = _launch_plan.__wrapped__(1, 1, L, 80, k_h, k_w, torch.bfloat16, None).meta
    assert (meta["BLOCK_D"], meta["BLOCK_D1"]) == tiles


@needs_kernel
def test_kernel_row_aligned_full_blocks_sam_layout_and_scale(monkeypatch):
    """Explicit 128-query blocks (the long-sequence config) on 2 x 64 keys: no masks at all; SAM's 3-D layout."""
    q, k, v, rh, rw = _inputs(1, 2, 2, 64, 64, torch.bfloat16, kernel_device())
    rel = rh.reshape(2, 128, 2), rw.reshape(2, 128, 64)
    out = _run_kernel_poisoned(monkeypatch, q, k, v, *rel, scale=0.2, config=_config(128, 64, "ROWS"))
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw, 0.2), 1e-2)


@needs_kernel
def test_kernel_float32_and_strided_inputs(monkeypatch):
    q, k, v, rh, _ = _inputs(2, 2, 4, 6, 24, torch.float32, kernel_device())
    k = k.transpose(1, 2).contiguous().transpose(1, 2)
    rw_strided = torch.randn(2, 2, 24, 2 * 6, device=q.device)[..., ::2]  # last-dim stride 2: copied by the launcher
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw_strided)
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw_strided), 1e-5)
