import dataclasses
import importlib

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.ops import rel_pos_attention
from lowbit_flex.ops.eager import PlanCache
from lowbit_flex.score_mods._rel_pos_layout import attention_out_strides
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
    out_t = rel_pos_attention(q_t, k, v, rh, rw)
    torch.testing.assert_close(out_t, ref, rtol=0, atol=0)
    assert out_t.transpose(1, 2).is_contiguous()  # the output keeps q's layout: the caller's reshape is a view


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
        ((q, k, v, rh, rw, -1.0), ValueError, "scale: expected a positive finite"),
        ((q, k, v, rh, rw, float("nan")), ValueError, "scale: expected a positive finite"),
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


def test_tensor_scale_is_rejected_by_the_wrapper():
    """The schema's ``float?`` converts a 0-d tensor in ``torch.ops``; the wrapper would hand it to the kernel as a
    pointer, so it refuses it."""
    q, k, v, rh, rw = _inputs(1, 2, 3, 4, 16, torch.float32)
    with pytest.raises(TypeError, match="scale: expected a float or None"):
        rel_pos_attention(q, k, v, rh, rw, torch.tensor(0.3))


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

    real_empty = torch.empty_strided
    monkeypatch.setattr(mod.torch, "empty_strided", lambda *a, **kw: poison_(real_empty(*a, **kw)))
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


def _config(m, n, bias: str, split=True, tma=False):
    """One stage, except where the head dim may split: the plan splits it only in software-pipelined loops."""
    from lowbit_flex.kernels.rel_pos_attention import Bias, RelPosConfig

    return RelPosConfig(m, n, 0, 4, 3 if split else 1, Bias[bias], split, tma)


def test_head_dim_splits_only_in_pipelined_loops():
    """On the H200 (Triton 3.6) a split head dim's second tile came out wrong where the key loop is not pipelined
    (one key block, or one stage): such launches pad the head dim instead (80 -> 128)."""
    from lowbit_flex.kernels.rel_pos_attention import Bias, RelPosConfig, _launch_plan

    def tiles(k_h: int, stages: int) -> tuple[int, int]:
        cfg = RelPosConfig(64, 64, 0, 4, stages, Bias.ROWS)
        meta = _launch_plan(1, 1, k_h * 14, 80, k_h, 14, torch.bfloat16, cfg, False, False, *range(1, 19)).meta
        return meta["BLOCK_D"], meta["BLOCK_D1"]

    assert tiles(14, 3) == (64, 16)  # 4 packed rows per 64-slot block: 4 key blocks, 3 stages
    assert tiles(14, 1) == (128, 0)
    assert tiles(4, 3) == (128, 0)  # one key block


@needs_kernel
@pytest.mark.parametrize("k_h, k_w, d, m, n, bias, split", [
    (14, 14, 64, 32, 32, "ROWS", True),  # 2 packed rows (28 of 32 slots; the rel_w tile's -inf masks 4) per block
    (14, 14, 16, 32, 64, "ROWS", True),  # 4 rows per block, k_h % 4 != 0: the last block's rows 14, 15 (past L)
    # are masked per logit
    (5, 7, 80, 16, 16, "ROWS", True),  # 2 rows, 14 of 16 slots per block; head dim split 64 + 16
    (5, 40, 64, 32, 128, "ROWS", True),  # 3 rows of 40 per 128-slot block (the 48 x 40 layout), last block 2 rows
    (6, 40, 64, 64, 64, "ROWS", True),  # one row per block, 40 of 64 slots: rel_h in the row max, loaded a block
    # ahead (the last block's load past k_h masked)
    (12, 3, 16, 16, 32, "ROWS", True),  # 10 rows per block: rel_h gathered per slot; last block 2 rows
    (37, 1, 16, 16, 16, "ROWS", True),  # a 37 x 1 grid: 16 rows per block, gathered
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
@pytest.mark.parametrize("k_h, k_w, n", [(5, 40, 128), (3, 16, 64)])
@pytest.mark.parametrize("key_row_max", [True, False])
def test_kernel_rel_h_per_key_row_max_or_per_logit(monkeypatch, k_h, k_w, n, key_row_max):
    """Packed rows on whole 8-slot column groups, both formations against float64: rel_h in each key row's max and
    the exponent's offset, or added to every logit (the benchmark's A/B); the last block partial (5 % 3, 3 % 4)."""
    from lowbit_flex.kernels.rel_pos_attention import Bias, RelPosConfig

    q, k, v, rh, rw = _inputs(1, 2, k_h, k_w, 64, torch.bfloat16, kernel_device())
    # Key rows ~170 log2 units apart in bias: a row max missing a row's rel_h (or taking another row's) would
    # overflow or flush the exponentials (softmax itself does not depend on the max).
    rh = rh * 60
    config = RelPosConfig(32, n, 0, 4, 3, Bias.ROWS, key_row_max=key_row_max)
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw, config=config)
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw), 1e-2)


@needs_kernel
@pytest.mark.parametrize("k_h, k_w, n", [(14, 14, 32), (6, 40, 64), (5, 40, 128)])
def test_kernel_nan_stays_in_its_query_row(monkeypatch, k_h, k_w, n):
    """A NaN in one query row of q, and in another row's rel_h and rel_w, poisons those rows only: the padding
    slots' -inf and the rows' maxima never mix rows."""
    q, k, v, rh, rw = _inputs(1, 2, k_h, k_w, 16, torch.bfloat16, kernel_device())
    from lowbit_flex.kernels import rel_pos_attention as mod

    q[0, 0, 3, 5] = float("nan")
    rh[0, 1, 7, 0] = float("nan")
    rw[0, 1, 9, k_w - 1] = float("nan")
    # Pre-filled with a finite value (NaN is the expected result in the poisoned rows): every row is then checked
    # to be written, the poisoned ones by being NaN, the others by matching float64.
    real_empty = torch.empty_strided
    monkeypatch.setattr(mod.torch, "empty_strided", lambda *a, **kw: real_empty(*a, **kw).fill_(1e4))
    out = mod.rel_pos_attention_triton(q, k, v, rh, rw, config=_config(32, n, "ROWS"))
    bad = torch.zeros(out.shape[:3], dtype=torch.bool, device=out.device)
    bad[0, 0, 3] = bad[0, 1, 7] = bad[0, 1, 9] = True
    assert out[bad].isnan().all(dim=-1).all()
    ref = _reference_f64(q, k, v, rh, rw)
    assert_rel_error(out[~bad], ref[~bad], 1e-2)


@needs_kernel
@pytest.mark.parametrize("k_h, k_w, d, n", [(14, 14, 64, 32), (14, 14, 80, 64), (6, 40, 64, 128), (5, 40, 80, 64),
                                           (37, 1, 24, 32), (3, 64, 128, 64)])  # fmt: skip
def test_kernel_tma_loads(monkeypatch, k_h, k_w, d, n):
    """K and V through TMA descriptors (on sm_90; elsewhere the same configs take the pointer loads): packed rows
    whose padding slots read the next row's keys, zero-filled rows past L, a head dim padded past D (24 -> 32) and
    SAM's token-major q/k/v views. Split head dims (80) keep pointer loads (3 stages): at 1 stage their second
    tile came out wrong on the H200 (relative error 0.42-0.47), and these cases caught it."""
    b, h, L = 2, 3, k_h * k_w
    qkv = torch.randn(b, L, 3, h, d, device=kernel_device()).to(torch.bfloat16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    _, _, _, rh, rw = _inputs(b, h, k_h, k_w, d, torch.bfloat16, kernel_device())
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw, config=_config(64, n, "ROWS", tma=True))
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw), 1e-2)


@needs_kernel
def test_kernel_without_bias_is_plain_attention(monkeypatch):
    """``Bias.NONE`` (the benchmark's floor for this kernel) is softmax(q k^T s) v: the bias tables are ignored."""
    q, k, v, rh, rw = _inputs(1, 2, 6, 9, 80, torch.bfloat16, kernel_device())
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw, config=_config(32, 32, "NONE"))
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) * 80**-0.5, -1) @ v.double()
    assert_rel_error(out, ref, 1e-2)


needs_sm90 = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)),
    reason="the Gluon kernel runs on sm_90 only",
)


def _gluon_launch(q, k, v, rh, rw, config):
    """Assert that ``config`` runs the Gluon kernel on these tensors (not the Triton fallback), and run it into a
    NaN-poisoned output."""
    from lowbit_flex.kernels.rel_pos_attention import rel_pos_plan

    launch, scalars = rel_pos_plan(q, k, v, rh, rw, None, config)
    assert launch.kernel.fn.__name__ == "_rel_pos_attention_fwd_sm90_ws"
    out = poison_(torch.empty_strided(q.shape, attention_out_strides(q), dtype=q.dtype, device=q.device))
    launch(q, k, v, rh, rw, out, *scalars)
    return out


@needs_sm90
@pytest.mark.parametrize("layout", ["sam", "contiguous"])
@pytest.mark.parametrize("b, k_h, k_w, d, n, stages, dtype, block_m, staged", [
    (2, 64, 64, 64, 64, 3, torch.bfloat16, 128, False),  # SAM's global grid: one whole row per block, rel_h in row max
    (1, 64, 64, 128, 64, 2, torch.bfloat16, 128, False),  # batch 1, D = 128, 2 ring slots (the ring wraps 32 times)
    (2, 48, 40, 64, 128, 3, torch.float16, 128, False),  # three packed rows per 128 slots, padding slots: next row
    (1, 48, 40, 64, 64, 4, torch.bfloat16, 128, False),  # one padded row per block
    (2, 14, 14, 64, 64, 3, torch.bfloat16, 128, False),  # SAM's window: 4 rows per block, the last past L, 196 queries
    (1, 7, 9, 64, 32, 2, torch.bfloat16, 128, False),  # 3 rows per block, 7 % 3: the last block's logit mask
    (1, 1, 100, 64, 128, 3, torch.bfloat16, 128, False),  # 1 x N: one block, 100 queries (the second warpgroup past L)
    (1, 3, 64, 128, 64, 4, torch.bfloat16, 128, False),  # fewer key blocks than ring slots, 192 queries
    (2, 64, 64, 64, 64, 3, torch.bfloat16, 192, False),  # three consumer warpgroups: 4096 = 21 1/3 programs of 192 rows
    (1, 48, 40, 64, 64, 2, torch.float16, 192, False),
    (1, 14, 14, 64, 64, 4, torch.bfloat16, 192, False),  # 196 queries: the second program's rows past L but 4
    # rel_h staged in shared memory: SAM's global grid (both consumer counts, D = 128), 48 of 64 staged key rows
    (2, 64, 64, 64, 64, 3, torch.bfloat16, 192, True),
    (1, 64, 64, 128, 64, 2, torch.bfloat16, 128, True),
    (1, 48, 40, 64, 64, 3, torch.float16, 192, True),
    (1, 3, 64, 128, 64, 4, torch.bfloat16, 128, True),  # 3 of 4 staged key rows, fewer blocks than ring slots
])  # fmt: skip
def test_gluon_kernel_matches_float64_and_writes_everything(
    b, k_h, k_w, d, n, stages, dtype, block_m, staged, layout
):  # fmt: skip
    """The warp-specialized Gluon kernel against float64 on every bias path it takes, with two and three consumer
    warpgroups, rel_h read from memory or staged in shared memory, on SAM's token-major q/k/v views (the output
    (B, L, H, D) in memory) and contiguous ones."""
    from lowbit_flex.kernels.rel_pos_attention import gluon_config, rel_pos_plan

    h, L = 3, k_h * k_w
    qkv = torch.randn(b, L, 3, h, d, device="cuda").to(dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    if layout == "contiguous":
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    _, _, _, rh, rw = _inputs(b, h, k_h, k_w, d, dtype, "cuda")
    config = gluon_config(n, stages, block_m=block_m, rel_h_staged=staged)
    out = _gluon_launch(q, k, v, rh, rw, config)
    assert (rel_pos_plan(q, k, v, rh, rw, None, config)[0].meta["RH_STAGE_ROWS"] > 1) == staged
    assert_fully_written(out)
    assert out.stride() == attention_out_strides(q)
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw), 1e-2)


@needs_sm90
@pytest.mark.parametrize("k_h, k_w, kernel, tma", [
    (64, 64, "_rel_pos_attention_fwd_sm90_ws", None),  # SAM's D = 64 global attention: the Gluon kernel's row
    (48, 40, "_rel_pos_attention_kernel", True),  # packed key rows on a long grid: the Triton kernel with TMA loads
])  # fmt: skip
def test_device_descriptor_rows_through_the_eager_op(monkeypatch, k_h, k_w, kernel, tma):
    """The table's rows whose kernels build TMA descriptors on the device: the op's eager path plans, binds and
    launches them (the descriptors' scratch from Triton's allocator), and a compiled call takes the pointer-load
    Triton plan; both against float64."""
    op_mod = importlib.import_module("lowbit_flex.ops.rel_pos_attention")  # the package re-exports the function
    monkeypatch.setattr(op_mod, "_EAGER_PLANS", PlanCache())
    b, h, d = 1, 3, 64
    qkv = torch.randn(b, k_h * k_w, 3, h, d, device="cuda").to(torch.bfloat16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    _, _, _, rh, rw = _inputs(b, h, k_h, k_w, d, torch.bfloat16, "cuda")
    ref = _reference_f64(q, k, v, rh, rw)
    for _ in range(2):  # the first call plans and binds, the second launches the bound kernel
        assert_rel_error(rel_pos_attention(q, k, v, rh, rw), ref, 1e-2)
    (plan,) = op_mod._EAGER_PLANS.values()
    assert plan.launch.kernel.fn.__name__ == kernel and plan.bound is not None
    assert plan.launch.meta.get("TMA") is tma and not plan.launch.traced.meta["TMA"]
    compiled = torch.compile(rel_pos_attention, fullgraph=True)
    assert_rel_error(compiled(q, k, v, rh, rw), ref, 1e-2)


@needs_sm90
def test_gluon_kernel_without_bias_is_plain_attention():
    from lowbit_flex.kernels.rel_pos_attention import Bias, gluon_config

    q, k, v, rh, rw = _inputs(1, 2, 10, 30, 64, torch.bfloat16, "cuda")  # 300 keys: a partial last block
    out = _gluon_launch(q, k, v, rh, rw, gluon_config(128, 3, Bias.NONE))
    assert_fully_written(out)
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) * 64**-0.5, -1) @ v.double()
    assert_rel_error(out, ref, 1e-2)


@needs_sm90
@pytest.mark.parametrize("layout", ["sam", "contiguous"])
@pytest.mark.parametrize("b, h, k_h, k_w, d, n, stages, block_m, staged, bias", [
    (2, 3, 64, 64, 64, 64, 3, 192, True, "ROWS"),  # the table's tile: heads 1, 2, 4, 5 start mid-program
    (1, 3, 5, 64, 64, 64, 3, 192, True, "ROWS"),  # 5 chunks a head: head 1 starts at consumer 2, head 2 at 1
    (2, 1, 5, 64, 64, 64, 4, 192, False, "ROWS"),  # 10 chunks: the last program's consumers 1 and 2 past every head
    (2, 3, 14, 14, 64, 64, 3, 192, False, "ROWS"),  # SAM's window: 4 chunks, the last of 4 rows, packed key rows
    (1, 5, 48, 40, 64, 64, 3, 192, True, "ROWS"),  # one padded key row per block, rel_h staged
    (1, 3, 7, 9, 64, 32, 2, 192, False, "ROWS"),  # 63 rows: one chunk, fewer than the consumers (one head each)
    (2, 3, 5, 64, 128, 64, 2, 128, True, "ROWS"),  # two consumers at D = 128
    (1, 3, 10, 30, 64, 64, 3, 192, False, "NONE"),  # plain attention, 300 keys: a partial last key block
])  # fmt: skip
def test_gluon_kernel_across_heads_matches_float64(b, h, k_h, k_w, d, n, stages, block_m, staged, bias, layout):
    """``cross_heads``: programs whose consumers take 64-row chunks of consecutive heads (a program's rows may span
    two heads, each with its own key/value blocks in the ring; the last program's chunks may lie past every head)
    against float64, every row written."""
    from lowbit_flex.kernels.rel_pos_attention import Bias, gluon_config, rel_pos_plan

    L = k_h * k_w
    qkv = torch.randn(b, L, 3, h, d, device="cuda").to(torch.bfloat16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    if layout == "contiguous":
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    _, _, _, rh, rw = _inputs(b, h, k_h, k_w, d, torch.bfloat16, "cuda")
    config = gluon_config(n, stages, Bias[bias], block_m=block_m, rel_h_staged=staged, cross_heads=True)
    chunks = -(-L // 64)
    plan = rel_pos_plan(q, k, v, rh, rw, None, config)[0]
    assert plan.meta["HEAD_CHUNKS"] == (chunks if chunks >= block_m // 64 else 0)
    out = _gluon_launch(q, k, v, rh, rw, config)
    assert_fully_written(out)
    if bias == "NONE":
        ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) * d**-0.5, -1) @ v.double()
    else:
        ref = _reference_f64(q, k, v, rh, rw)
    assert_rel_error(out, ref, 1e-2)


@needs_sm90
@pytest.mark.parametrize("cross_heads", [False, True])
@pytest.mark.parametrize("k_h, k_w, n, staged", [(14, 14, 64, False), (48, 40, 128, False), (16, 64, 64, False),
                                                 (16, 64, 64, True)])  # fmt: skip
def test_gluon_kernel_nan_stays_in_its_query_row(k_h, k_w, n, staged, cross_heads):
    """As test_kernel_nan_stays_in_its_query_row, for the Gluon kernel: a NaN in one query row of q, and in other
    rows' rel_h and rel_w, poisons those rows only (rows of both consumer warpgroups; across heads, three consumers
    whose programs hold both heads' rows)."""
    from lowbit_flex.kernels.rel_pos_attention import gluon_config

    config = gluon_config(n, 3, rel_h_staged=staged)
    if cross_heads:  # 64-slot blocks: the tile three consumers' registers take
        config = gluon_config(64, 3, block_m=192, rel_h_staged=staged, cross_heads=True)

    q, k, v, rh, rw = _inputs(1, 2, k_h, k_w, 64, torch.bfloat16, "cuda")
    q[0, 0, 3, 5] = float("nan")
    rh[0, 1, 70, 0] = float("nan")
    rw[0, 1, 9, k_w - 1] = float("nan")
    out = _gluon_launch(q, k, v, rh, rw, config)
    bad = torch.zeros(out.shape[:3], dtype=torch.bool, device=out.device)
    bad[0, 0, 3] = bad[0, 1, 70] = bad[0, 1, 9] = True
    assert out[bad].isnan().all(dim=-1).all()
    assert_rel_error(out[~bad], _reference_f64(q, k, v, rh, rw)[~bad], 1e-2)


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
    "k_h, k_w, block_n, widened",
    [
        (48, 40, 64, 128),  # one padded row per 64 slots (3072 for 1920 keys) -> three per 128 (2048)
        (64, 64, 64, 64),  # whole rows already: doubling saves nothing
        (14, 14, 32, 32),  # 7 blocks of 2 rows (224 slots); 4 rows per 64 would be 256
        (7, 9, 32, 32),  # 3 rows per 32 slots (96); 64-slot blocks would select 7 rows
        (1, 37, 64, 64),  # one row in all
        (3, 200, 64, 256),  # a row wider than the table's block: one whole row (ONEHOT takes it in the table)
        (10, 100, 64, 128),  # one row per block, not doubled past 128 slots
    ],
)
def test_rows_block_n_takes_the_fewest_key_slots(k_h, k_w, block_n, widened):
    from lowbit_flex.kernels.rel_pos_attention import rows_block_n

    assert rows_block_n(k_h, k_w, block_n) == widened


def test_tma_only_where_the_layout_allows(monkeypatch):
    """TMA needs sm_90+, 16-bit values, a unit head-dim stride and 16-byte aligned outer strides; anything else
    takes the pointer loads (and the interpreter never takes TMA)."""
    from lowbit_flex.kernels import rel_pos_attention as mod

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    sam = (4096 * 3 * 768, 64, 3 * 768, 1)  # SAM's q/k/v views of one qkv projection (B, L, 3, H, D)
    contiguous = (12 * 4096 * 64, 4096 * 64, 64, 1)
    assert mod.tma_layout_ok(torch.bfloat16, sam, contiguous)
    assert not mod.tma_layout_ok(torch.float32, sam, sam)  # fp32 keeps the IEEE pointer path
    assert not mod.tma_layout_ok(torch.bfloat16, sam, (12 * 196 * 128, 196 * 128, 128, 2))  # strided head dim
    assert not mod.tma_layout_ok(torch.bfloat16, (3 * 196 * 20, 196 * 20, 20, 1), sam)  # 40-byte rows
    # The plan: TMA only with one head-dim tile (80 = 64 + 16 keeps pointer loads, see test_kernel_tma_loads).
    config = mod.RelPosConfig(64, 64, 0, 4, 3, mod.Bias.ROWS, True, True)
    rel = (40 * 64 * 12 * 40, 40 * 64 * 40, 40)  # (B, H, L, k) rel strides, unit last stride
    for d, tma in ((64, True), (80, False)):
        qkv = (4096 * 3 * 12 * d, d, 3 * 12 * d, 1)
        plan = mod._launch_plan.__wrapped__(1, 12, 2560, d, 64, 40, torch.bfloat16, config, True, True,
                                            *qkv, *qkv, *qkv, *rel, *rel)  # fmt: skip
        assert plan.meta["TMA"] is tma
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    assert not mod.tma_layout_ok(torch.bfloat16, sam, contiguous)


def _gluon_plan(mod, k_h, k_w, d, config, dtype=torch.bfloat16, aligned=True, row_elems=None):
    """The plan for SAM's q/k/v views of one (B = 1, L, 3, 12, d) projection (rows of ``row_elems`` elements)."""
    L = k_h * k_w
    row = row_elems or 3 * 12 * d
    qkv = (L * row, d, row, 1)
    rel_h, rel_w = (12 * L * k_h, L * k_h, k_h), (12 * L * k_w, L * k_w, k_w)
    return mod._launch_plan.__wrapped__(1, 12, L, d, k_h, k_w, dtype, config, True, aligned,
                                        *qkv, *qkv, *qkv, *rel_h, *rel_w)  # fmt: skip


@pytest.mark.parametrize(
    "k_h, k_w, d, n, bias, block_n, block_m",
    [
        (64, 64, 64, 64, "ROWS", 64, 128),  # SAM's global grid: one whole row per block
        (64, 64, 128, 64, "ROWS", 64, 128),
        (48, 40, 64, 128, "ROWS", 128, 128),  # three packed rows per 128 slots
        (48, 40, 64, 64, "ROWS", 64, 128),  # one padded row per 64 slots
        (14, 14, 64, 32, "ROWS", 32, 128),  # two rows of SAM's window per block
        (7, 9, 64, 16, "ROWS", 16, 128),  # raised to a whole row (9 -> 16 slots)
        (64, 64, 64, 128, "NONE", 128, 128),  # plain attention: 128 consecutive keys per block
        (64, 64, 64, 64, "ROWS", 64, 192),  # three consumer warpgroups
        (48, 40, 64, 64, "ROWS", 64, 192),
    ],
)
def test_gluon_plan_where_it_can_run(monkeypatch, k_h, k_w, d, n, bias, block_n, block_m):
    """A Gluon config on sm_90 launches the warp-specialized kernel, with the key grid as constexprs and 128 or 192
    query rows per program; traced calls (and the eager scalars' query-block count) take the table's Triton
    plan."""
    from lowbit_flex.kernels import rel_pos_attention as mod

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    mod._launch_plan.cache_clear()  # the Gluon plan caches its traced plan: keep none made under these patches
    try:
        plan = _gluon_plan(mod, k_h, k_w, d, mod.gluon_config(n, 3, mod.Bias[bias], block_m))
        table = mod.pick_config(d, k_h * k_w, k_w)
        if bias == "NONE":
            table = dataclasses.replace(table, bias=mod.Bias.NONE)
        expected_traced = _gluon_plan(mod, k_h, k_w, d, table)
    finally:
        mod._launch_plan.cache_clear()
    assert plan.kernel.fn.__name__ == "_rel_pos_attention_fwd_sm90_ws"
    assert plan.traced.kernel is mod._rel_pos_attention_kernel
    assert plan.traced.meta == expected_traced.meta and plan.traced.grid == expected_traced.grid
    rows = (k_w, k_h) if bias == "ROWS" else (1, k_h * k_w)
    assert (plan.meta["KEY_ROW_W"], plan.meta["KEY_ROWS"]) == rows
    assert (plan.meta["BLOCK_N"], plan.meta["STAGES"], plan.meta["D"], plan.meta["OUT_LHD"]) == (block_n, 3, d, True)
    assert (plan.meta["CONSUMERS"], plan.grid) == (block_m // 64, (-(-k_h * k_w // block_m) * 12, 1, 1))
    assert mod.needs_scratch(plan)


@pytest.mark.parametrize(
    "k_h, k_w, d, capability, gluon",
    [
        (64, 64, 64, (9, 0), True),  # SAM's D = 64 global attention: the Gluon row
        (32, 64, 64, (9, 0), True),  # any number of 64-wide rows past 256 keys
        (4, 64, 64, (9, 0), False),  # 256 keys: the windows' Triton row
        (64, 64, 80, (9, 0), False),  # vit_h: the split head dim stays Triton
        (48, 40, 64, (9, 0), False),  # the 48 x 40 grid: the Gluon kernel lost there
        (64, 64, 64, (8, 0), False),  # no WGMMA: the Triton row
    ],
)
def test_table_takes_the_gluon_kernel_only_where_it_measured_faster(monkeypatch, k_h, k_w, d, capability, gluon):
    from lowbit_flex.kernels import rel_pos_attention as mod

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    mod._launch_plan.cache_clear()
    try:
        plan = _gluon_plan(mod, k_h, k_w, d, None)
        triton_row = _gluon_plan(mod, k_h, k_w, d, mod.pick_config(d, k_h * k_w, k_w))
    finally:
        mod._launch_plan.cache_clear()
    # The row is the same on every device; the plan falls back to the Triton row off sm_90.
    assert (mod.pick_gluon_config(d, k_h * k_w, k_w) is not None) == (d == 64 == k_w and k_h * k_w > 256)
    if gluon:
        assert plan.kernel.fn.__name__ == "_rel_pos_attention_fwd_sm90_ws"
        assert (plan.meta["CONSUMERS"], plan.meta["BLOCK_N"], plan.meta["STAGES"]) == (3, 64, 3)
        assert plan.meta["RH_STAGE_ROWS"] == k_h  # rel_h staged in shared memory (run 57: 3-4 % faster)
        assert plan.meta["HEAD_CHUNKS"] == k_h  # programs across heads (run 61: vit_l 2.5 % faster)
        assert plan.traced.meta == triton_row.meta
    else:
        assert plan.kernel is mod._rel_pos_attention_kernel and plan.meta == triton_row.meta


@pytest.mark.parametrize(
    "k_h, k_w, n, block_m, stage_rows",
    [
        (64, 64, 64, 192, 64),  # one key row per block: every key row staged
        (48, 40, 64, 192, 64),  # one padded row per block: 48 rows in a power-of-two stack of 64
        (128, 64, 64, 192, 128),  # the most key rows it stages (48 KiB with three consumers)
        (129, 64, 64, 192, 1),  # more: each block's column read from memory
        (48, 40, 128, 128, 1),  # packed rows (a column per slot's row): from memory
        (14, 14, 64, 128, 1),
    ],
)
def test_gluon_plan_stages_rel_h_where_blocks_hold_one_key_row(monkeypatch, k_h, k_w, n, block_m, stage_rows):
    """``rel_h_staged`` stages each consumer's rel_h in shared memory where a block is one key row, up to
    GLUON_MAX_STAGED_KEY_ROWS key rows; elsewhere the kernel reads it from memory (RH_STAGE_ROWS = 1)."""
    from lowbit_flex.kernels import rel_pos_attention as mod

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    mod._launch_plan.cache_clear()
    try:
        plan = _gluon_plan(mod, k_h, k_w, 64, mod.gluon_config(n, 3, block_m=block_m, rel_h_staged=True))
        unstaged = _gluon_plan(mod, k_h, k_w, 64, mod.gluon_config(n, 3, block_m=block_m))
    finally:
        mod._launch_plan.cache_clear()
    assert plan.kernel.fn.__name__ == "_rel_pos_attention_fwd_sm90_ws"
    assert (plan.meta["RH_STAGE_ROWS"], unstaged.meta["RH_STAGE_ROWS"]) == (stage_rows, 1)
    assert {**plan.meta, "RH_STAGE_ROWS": 1} == unstaged.meta


@pytest.mark.parametrize(
    "b, h, k_h, k_w, d, n, stages, block_m, staged, chunks, grid",
    [
        (8, 16, 64, 64, 64, 64, 3, 192, True, 64, 2731),  # vit_l: 20.7 waves of 132 programs, not 21.3
        (1, 12, 64, 64, 64, 64, 3, 192, True, 64, 256),  # 12 * 64 chunks / 3
        (2, 3, 14, 14, 64, 64, 3, 192, False, 4, 8),  # 196 rows: 4 chunks, the last of 4 rows
        (1, 3, 7, 9, 64, 32, 3, 192, False, 0, 3),  # 63 rows: one chunk, fewer than the consumers
        (1, 3, 2, 64, 64, 64, 3, 192, False, 0, 3),  # 128 rows: 2 chunks, still fewer
        (1, 3, 2, 64, 64, 64, 3, 128, False, 2, 3),  # ... but as many as two consumers
        (1, 3, 64, 64, 128, 64, 2, 128, True, 64, 96),  # two consumers at D = 128, 2 slots: 160 KiB
        (1, 3, 64, 64, 128, 64, 4, 128, False, 0, 96),  # 4 slots: 288 KiB with two heads' ring, so one head each
    ],
)
def test_gluon_plan_across_heads(monkeypatch, b, h, k_h, k_w, d, n, stages, block_m, staged, chunks, grid):
    """``cross_heads`` lays every (batch, head)'s 64-row chunks end to end (``HEAD_CHUNKS`` per head, the grid
    ``ceil(B * H * HEAD_CHUNKS / consumers)``) where each head has at least as many chunks as a program has
    consumers and the ring of two heads fits in shared memory; elsewhere each program keeps to one head."""
    from lowbit_flex.kernels import rel_pos_attention as mod

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    L = k_h * k_w
    qkv = (L * h * d, L * d, d, 1)
    rel_h, rel_w = (h * L * k_h, L * k_h, k_h), (h * L * k_w, L * k_w, k_w)
    args = (b, h, L, d, k_h, k_w, torch.bfloat16)
    mod._launch_plan.cache_clear()
    try:
        plans = [
            mod._launch_plan.__wrapped__(
                *args, mod.gluon_config(n, stages, block_m=block_m, rel_h_staged=staged, cross_heads=cross), False,
                True, *qkv, *qkv, *qkv, *rel_h, *rel_w,
            )
            for cross in (True, False)
        ]  # fmt: skip
    finally:
        mod._launch_plan.cache_clear()
    across, per_head = plans
    assert across.kernel.fn.__name__ == "_rel_pos_attention_fwd_sm90_ws"
    assert (across.meta["HEAD_CHUNKS"], across.grid) == (chunks, (grid, 1, 1))
    assert {**across.meta, "HEAD_CHUNKS": 0} == per_head.meta and per_head.meta["HEAD_CHUNKS"] == 0
    assert per_head.grid == (-(-L // block_m) * b * h, 1, 1)
    if not chunks:
        assert across.grid == per_head.grid


@pytest.mark.parametrize("block_m", [64, 160, 256])
def test_gluon_config_rejects_a_query_block_it_has_no_warpgroups_for(block_m):
    from lowbit_flex.kernels import rel_pos_attention as mod

    with pytest.raises(ValueError, match=r"config: the Gluon kernel takes block_m in \[128, 192\]"):
        _gluon_plan(mod, 64, 64, 64, mod.gluon_config(64, 3, block_m=block_m))


def test_gluon_config_rejects_a_one_slot_ring():
    """One slot would deadlock: block j - 1 holds it for its PV while block j's QKᵀ waits for it."""
    from lowbit_flex.kernels import rel_pos_attention as mod

    with pytest.raises(ValueError, match="config: the Gluon kernel needs num_stages >= 2 ring slots, got 1"):
        _gluon_plan(mod, 64, 64, 64, mod.gluon_config(64, 1))


@pytest.mark.parametrize(
    "case",
    [
        dict(d=80),  # a split head dim: a Gluon tensor cannot be 80 wide
        dict(d=32),
        dict(dtype=torch.float32),
        dict(k_h=40, k_w=3, n=32),  # 10 rows per block: the gather path
        dict(k_h=3, k_w=160, n=64),  # a row wider than 128 slots: the one-hot MMA
        dict(aligned=False),  # a base address TMA cannot read
        dict(row_elems=3 * 12 * 64 + 4),  # 8-byte padded rows: not 16-byte aligned
        dict(capability=(8, 0)),
        dict(capability=(10, 0)),  # WGMMA is sm_90 only
        dict(d=128, n=128),  # past two consumers' registers (ptxas spills)
        dict(n=128, block_m=192),  # past three consumers' registers
        dict(d=128, block_m=192),
    ],
)
def test_gluon_config_falls_back_to_the_table_where_it_cannot_run(monkeypatch, case):
    from lowbit_flex.kernels import rel_pos_attention as mod

    defaults = dict(k_h=64, k_w=64, d=64, n=64, block_m=128, dtype=torch.bfloat16, aligned=True, row_elems=None)
    case = defaults | dict(capability=(9, 0)) | case
    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: case["capability"])
    mod._launch_plan.cache_clear()
    try:
        args = (case["k_h"], case["k_w"], case["d"])
        kw = dict(dtype=case["dtype"], aligned=case["aligned"], row_elems=case["row_elems"])
        plan = _gluon_plan(mod, *args, mod.gluon_config(case["n"], 3, block_m=case["block_m"]), **kw)
        table = _gluon_plan(mod, *args, mod.pick_config(case["d"], case["k_h"] * case["k_w"], case["k_w"]), **kw)
    finally:
        mod._launch_plan.cache_clear()
    assert plan.kernel is mod._rel_pos_attention_kernel and plan.traced is None
    assert plan.meta == table.meta and plan.grid == table.grid


def test_pick_config_widens_rows_and_sends_wide_rows_to_the_one_hot_mma():
    from lowbit_flex.kernels.rel_pos_attention import Bias, pick_config

    grid = pick_config(64, 48 * 40, 40)
    assert (grid.bias, grid.block_n) == (Bias.ROWS, 128)
    assert pick_config(64, 64 * 64, 64).block_n == 64
    assert pick_config(64, 2 * 160, 160).bias is Bias.ONEHOT


@pytest.mark.parametrize("k_h, k_w, d, tma", [
    (48, 40, 64, True),  # three packed rows per 128-slot block on a long grid
    (48, 40, 80, True),  # the config asks; the split head dim's plan keeps pointer loads (below)
    (64, 64, 64, False),  # one row per block: measured even
    (64, 64, 80, False),
    (14, 14, 64, False),  # windows: TMA ran 0.8-0.9x
    (2, 160, 64, False),  # one-hot
])  # fmt: skip
def test_table_reads_packed_rows_of_long_grids_through_tma_in_eager_calls_only(monkeypatch, k_h, k_w, d, tma):
    """The table's TMA row: eager launches with TMA loads (where the layout and a one-tile head dim allow), and a
    traced call's plan (PlanLaunch.traced) is the same launch with pointer loads."""
    from lowbit_flex.kernels import rel_pos_attention as mod

    assert mod.pick_config(d, k_h * k_w, k_w).tma is tma
    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    mod._launch_plan.cache_clear()
    try:
        plan = _gluon_plan(mod, k_h, k_w, d, mod.pick_config(d, k_h * k_w, k_w))
        pointer = _gluon_plan(mod, k_h, k_w, d, dataclasses.replace(mod.pick_config(d, k_h * k_w, k_w), tma=False))
    finally:
        mod._launch_plan.cache_clear()
    loads_tma = tma and d == 64
    assert plan.kernel is mod._rel_pos_attention_kernel and plan.meta["TMA"] is loads_tma
    if loads_tma:
        assert plan.traced.meta == pointer.meta and plan.traced.grid == plan.grid and plan.traced.traced is None
        assert {k: v for k, v in plan.meta.items() if k != "TMA"} == {
            k: v for k, v in pointer.meta.items() if k != "TMA"
        }
        assert mod.needs_scratch(plan)
    else:
        assert plan.traced is None and plan.meta == pointer.meta


@pytest.mark.parametrize("k_h, k_w, d", [(48, 40, 64), (64, 64, 64)])
def test_plans_with_a_traced_plan_take_a_symbolic_length(monkeypatch, k_h, k_w, d):
    """Under torch.compile with dynamic shapes L is a SymInt, which does not hash: the TMA row's and the Gluon row's
    plans make their traced (pointer-load Triton) plan without the plan cache too (GPU run 56: the second compiled
    shape of a test failed with 'unhashable type: non-nested SymInt')."""
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    from lowbit_flex.kernels import rel_pos_attention as mod
    from lowbit_flex.kernels.common import cached_plan

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    env = ShapeEnv()
    L = env.create_symintnode(env.create_symbol(k_h * k_w, source=ConstantSource("L")), hint=k_h * k_w)
    row = 3 * 3 * d
    qkv = (L * row, d, row, 1)
    rel_h, rel_w = (3 * L * k_h, L * k_h, k_h), (3 * L * k_w, L * k_w, k_w)
    mod._launch_plan.cache_clear()
    try:
        args = (1, 3, L, d, k_h, k_w, torch.bfloat16, None, True, True, *qkv, *qkv, *qkv, *rel_h, *rel_w)
        plan = cached_plan(mod._launch_plan, *args)
    finally:
        mod._launch_plan.cache_clear()
    assert plan.traced is not None and plan.traced.kernel is mod._rel_pos_attention_kernel
    assert not plan.traced.meta["TMA"]


@pytest.mark.parametrize("k_h, k_w, n, per_key_row", [
    (48, 40, 128, True),  # 3 rows of 40 slots: whole 8-slot column groups
    (2, 64, 128, True),  # 2 rows of 64
    (14, 14, 32, False),  # 14-slot rows split the groups: rel_h per logit
    (5, 16, 64, True),  # 4 rows of 16, the last block partial
    (6, 40, 64, False),  # one row per block: rel_h in the row max already
    (12, 3, 32, False),  # 10 rows: gathered
])  # fmt: skip
def test_row_max_per_key_row_where_rows_fill_whole_column_groups(k_h, k_w, n, per_key_row):
    from lowbit_flex.kernels import rel_pos_attention as mod

    def plan(key_row_max: bool):
        cfg = mod.RelPosConfig(64, n, 0, 4, 3, mod.Bias.ROWS, True, False, key_row_max=key_row_max)
        return mod._launch_plan.__wrapped__(1, 1, k_h * k_w, 64, k_h, k_w, torch.bfloat16, cfg, False, False)

    assert plan(True).meta["ROW_MAX_PER_KEY_ROW"] is per_key_row
    assert plan(False).meta["ROW_MAX_PER_KEY_ROW"] is False


@pytest.mark.parametrize(
    "k_h, k_w, tiles", [(14, 14, (64, 16)), (1, 37, (128, 0)), (64, 64, (64, 16)), (2, 160, (64, 16))]
)
def test_plan_splits_the_head_dim_only_over_several_key_blocks(k_h, k_w, tiles):
    """D = 80 splits into 64 + 16 unless the whole key range is one block (1 x 37: one padded 64-slot row), where the
    split tile's accumulator came out wrong on the H200 and the plan pads to 128 instead."""
    from lowbit_flex.kernels.rel_pos_attention import _launch_plan

    L = k_h * k_w
    meta = _launch_plan.__wrapped__(1, 1, L, 80, k_h, k_w, torch.bfloat16, None, False, True).meta
    assert (meta["BLOCK_D"], meta["BLOCK_D1"]) == tiles


@needs_kernel
def test_kernel_row_aligned_full_blocks_sam_layout_and_scale(monkeypatch):
    """Explicit 128-query blocks (the long-sequence config) on 2 x 64 keys: no masks at all; SAM's 3-D layout."""
    q, k, v, rh, rw = _inputs(1, 2, 2, 64, 64, torch.bfloat16, kernel_device())
    rel = rh.reshape(2, 128, 2), rw.reshape(2, 128, 64)
    out = _run_kernel_poisoned(monkeypatch, q, k, v, *rel, scale=0.2, config=_config(128, 64, "ROWS"))
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw, 0.2), 1e-2)


@needs_kernel
@pytest.mark.parametrize("d", [64, 80])
def test_kernel_output_in_sams_token_major_layout(monkeypatch, d):
    """q, k, v as SAM's views of one (B, L, 3, H, D) projection: the output is written in (B, L, H, D) memory (every
    element, right values), so SAM's transpose + reshape after the op costs no copy."""
    b, h, k_h, k_w = 2, 3, 4, 6
    L = k_h * k_w
    qkv = torch.randn(b, L, 3, h, d, device=kernel_device()).to(torch.bfloat16)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    _, _, _, rh, rw = _inputs(b, h, k_h, k_w, d, torch.bfloat16, kernel_device())
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw)
    assert out.shape == (b, h, L, d) and out.transpose(1, 2).is_contiguous()
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw), 1e-2)
    flat = out.transpose(1, 2).reshape(b, L, h * d)
    assert flat.data_ptr() == out.data_ptr() and flat._base is not None  # a view, not a copy


@needs_kernel
def test_kernel_float32_and_strided_inputs(monkeypatch):
    q, k, v, rh, _ = _inputs(2, 2, 4, 6, 24, torch.float32, kernel_device())
    k = k.transpose(1, 2).contiguous().transpose(1, 2)
    rw_strided = torch.randn(2, 2, 24, 2 * 6, device=q.device)[..., ::2]  # last-dim stride 2: copied by the launcher
    out = _run_kernel_poisoned(monkeypatch, q, k, v, rh, rw_strided)
    assert_rel_error(out, _reference_f64(q, k, v, rh, rw_strided), 1e-5)


@needs_kernel
def test_eager_fast_path_checks_once_per_metadata_key(monkeypatch):
    """The eager call checks its arguments and plans the launch once per metadata key, then only allocates and
    launches: every call still matches float64 and writes every element; a new scale, layout or a bad input takes a
    new key; rel tensors the kernel cannot read in place (a strided rel_w) run the op's body."""

    from lowbit_flex.kernels import rel_pos_attention as kernel_mod

    op_mod = importlib.import_module("lowbit_flex.ops.rel_pos_attention")  # the package re-exports the function
    device = kernel_device()
    if device == "cpu":  # the interpreter: take the eager CUDA path with CPU tensors
        monkeypatch.setattr(op_mod, "needs_dispatcher", lambda q: False)
        monkeypatch.setattr(op_mod, "_runs_kernel", lambda q: True)
    monkeypatch.setattr(op_mod, "_EAGER_PLANS", PlanCache())
    real_check, checks = op_mod._check_args, []
    monkeypatch.setattr(op_mod, "_check_args", lambda *a: checks.append(1) or real_check(*a))
    real_empty = torch.empty_strided
    monkeypatch.setattr(kernel_mod.torch, "empty_strided", lambda *a, **kw: poison_(real_empty(*a, **kw)))

    b, h, k_h, k_w, d = 1, 2, 3, 5, 16
    q, k, v, rh, rw = _inputs(b, h, k_h, k_w, d, torch.bfloat16, device)
    for _ in range(3):
        q.normal_(), rh.normal_()  # fresh values under the same key
        out = rel_pos_attention(q, k, v, rh, rw)
        assert_fully_written(out)
        assert_rel_error(out, _reference_f64(q, k, v, rh, rw), 1e-2)
    assert len(checks) == 1 and len(op_mod._EAGER_PLANS) == 1
    assert_rel_error(rel_pos_attention(q, k, v, rh, rw, 0.3), _reference_f64(q, k, v, rh, rw, 0.3), 1e-2)
    five = rh.reshape(b * h, k_h, k_w, k_h)[..., None], rw.reshape(b * h, k_h, k_w, k_w)[:, :, :, None, :]
    assert_rel_error(rel_pos_attention(q, k, v, *five), _reference_f64(q, k, v, rh, rw), 1e-2)
    assert len(checks) == 3 and len(op_mod._EAGER_PLANS) == 3
    plan = next(iter(op_mod._EAGER_PLANS.values()))
    assert plan.launch is not None  # the first key launches directly
    assert (plan.bound is not None) == (device == "cuda")  # with every argument bound (not under the interpreter)
    # A q 2 bytes off 16-byte alignment: another key (the kernel is specialized on its pointers' alignment).
    q_off = torch.empty(q.numel() + 1, dtype=q.dtype, device=device)[1:].view_as(q).copy_(q)
    assert_rel_error(rel_pos_attention(q_off, k, v, rh, rw), _reference_f64(q, k, v, rh, rw), 1e-2)
    assert len(checks) == 4 and len(op_mod._EAGER_PLANS) == 4

    rw_strided = torch.randn(b, h, k_h * k_w, 2 * k_w, device=device).to(torch.bfloat16)[..., ::2]
    for _ in range(2):
        out = rel_pos_attention(q, k, v, rh, rw_strided)
        assert_rel_error(out, _reference_f64(q, k, v, rh, rw_strided), 1e-2)
    assert [plan.launch is None for plan in op_mod._EAGER_PLANS.values()] == [False] * 4 + [True]  # copies rel_w
    with pytest.raises(ValueError, match="k: expected dtype"):
        rel_pos_attention(q, k.half(), v, rh, rw)
    with pytest.raises(TypeError, match="rel_w: expected a torch.Tensor"):
        rel_pos_attention(q, k, v, rh, None)
    for scale in (1, 0.5, 1):  # an int scale reaches the kernel as a float (Triton would specialize an int 1)
        assert_rel_error(rel_pos_attention(q, k, v, rh, rw, scale), _reference_f64(q, k, v, rh, rw, scale), 1e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the bound launch is a CUDA path")
def test_eager_launch_hooks_see_the_launch():
    """With a Triton launch hook set (profilers), an eager call launches through Triton's own path, which the hook
    sees; without one, through the bound launch. Both match float64."""
    import triton

    q, k, v, rh, rw = _inputs(2, 2, 6, 7, 32, torch.bfloat16, "cuda")
    calls, hooks = [], triton.knobs.runtime
    old = hooks.launch_enter_hook
    for hooked in (False, True, False):
        hooks.launch_enter_hook = (lambda *a: calls.append(1)) if hooked else old
        try:
            q.normal_()
            out = rel_pos_attention(q, k, v, rh, rw)
        finally:
            hooks.launch_enter_hook = old
        assert_rel_error(out, _reference_f64(q, k, v, rh, rw), 1e-2)
    assert calls == [1]  # the hooked call only
