"""``lowbit::sam_rel_pos`` and its wrapper: SAM's rel_h / rel_w from the query and the raw tables."""

import importlib

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.ops import sam_rel_pos
from lowbit_flex.score_mods import sam_rel_pos as sam_rel_pos_einsum
from lowbit_flex.testing import assert_fully_written, kernel_device, poison_

OP = torch.ops.lowbit.sam_rel_pos


def _reference_f64(q, rel_pos_h, rel_pos_w, q_h, q_w):
    """The definition in float64 with explicit table rows: query i = (y, x) against key row kh / column kw."""
    qd = q.double().reshape(-1, q_h * q_w, q.shape[-1])
    y, x = torch.arange(q_h * q_w) // q_w, torch.arange(q_h * q_w) % q_w
    rows_h = y[:, None] - torch.arange(q_h)[None, :] + q_h - 1  # (L, q_h) table row of each (query, key row)
    rows_w = x[:, None] - torch.arange(q_w)[None, :] + q_w - 1
    th, tw = rel_pos_h.double().cpu(), rel_pos_w.double().cpu()
    rel_h = (qd.cpu()[:, :, None, :] * th[rows_h][None]).sum(-1)
    rel_w = (qd.cpu()[:, :, None, :] * tw[rows_w][None]).sum(-1)
    lead = q.shape[:-2]
    return rel_h.reshape(*lead, q_h * q_w, q_h), rel_w.reshape(*lead, q_h * q_w, q_w)


def _tables(q_h, q_w, d, dtype, device):
    return (torch.randn(2 * q_h - 1, d, device=device) * 0.5).to(dtype), (
        torch.randn(2 * q_w - 1, d, device=device) * 0.5
    ).to(dtype)


def _assert_rounded_once(out, ref):
    """Each element within one rounding (to ``out``'s dtype) of fp32 accumulation: what the kernel and the
    reference guarantee (the fp32 sum's own error is far below a 16-bit rounding)."""
    eps = torch.finfo(out.dtype).eps
    tol = ref.abs() * eps + 1e-5 * ref.abs().amax() + (1e-6 if out.dtype == torch.float32 else 0.0)
    err = (out.double().cpu() - ref).abs()
    assert bool((err <= tol).all()), (
        f"max error {float(err.max()):.3e}, tolerance there {float(tol.flatten()[err.argmax()]):.3e}"
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("q_h, q_w, d", [(5, 7, 16), (14, 14, 64), (3, 40, 80), (1, 9, 8)])
def test_reference_matches_float64_definition(q_h, q_w, d, dtype):
    q = torch.randn(2, 3, q_h * q_w, d).to(dtype)
    th, tw = _tables(q_h, q_w, d, dtype, "cpu")
    rel_h, rel_w = OP(q, th, tw, q_h, q_w)
    ref_h, ref_w = _reference_f64(q, th, tw, q_h, q_w)
    assert rel_h.dtype == dtype and rel_h.is_contiguous() and rel_w.is_contiguous()
    _assert_rounded_once(rel_h, ref_h)
    _assert_rounded_once(rel_w, ref_w)


def test_wrapper_matches_sams_formulation_and_falls_back_where_the_kernel_does_not_apply():
    q = torch.randn(6, 20, 8, dtype=torch.float64)
    th, tw = torch.randn(7, 8, dtype=torch.float64), torch.randn(9, 8, dtype=torch.float64)
    for got, want in zip(sam_rel_pos(q, th, tw, (4, 5), (4, 5)), sam_rel_pos_einsum(q, th, tw, (4, 5), (4, 5))):
        torch.testing.assert_close(got, want)
    # Resampled tables (11 rows for a 4-row grid) and a key grid unlike the query grid: SAM's formulation.
    th11 = torch.randn(11, 8, dtype=torch.float64)
    for q_size, k_size, tab_h in (((4, 5), (4, 5), th11), ((4, 5), (2, 5), th)):
        got = sam_rel_pos(q, tab_h, tw, q_size, k_size)
        want = sam_rel_pos_einsum(q, tab_h, tw, q_size, k_size)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
    # Tables in another dtype are cast to q's, as SAM does.
    qb = q.bfloat16()
    got = sam_rel_pos(qb, th.float(), tw.float(), (4, 5), (4, 5))
    assert all(t.dtype == torch.bfloat16 for t in got)
    ref = _reference_f64(qb, th.bfloat16(), tw.bfloat16(), 4, 5)
    for g, r in zip(got, ref):
        _assert_rounded_once(g, r.reshape(g.shape))


def _bad_cases():
    """``(args, exception, message, wrapper)``: ``wrapper`` where :func:`sam_rel_pos` hands the call to the op too
    (it casts the tables to q's dtype, and gives sizes past the kernel and tables of other lengths, which SAM
    resamples, to SAM's formulation)."""
    q = torch.randn(2, 3, 20, 8, dtype=torch.bfloat16)
    th, tw = torch.randn(7, 8, dtype=torch.bfloat16), torch.randn(9, 8, dtype=torch.bfloat16)
    return [
        ((q.int(), th, tw, 4, 5), TypeError, "q: expected dtype", True),
        ((q[0, 0, 0], th, tw, 4, 5), ValueError, "q: expected \\(N, L, D\\) or \\(B, H, L, D\\)", True),
        ((q, tw, tw, 5, 5), ValueError, "q: expected L = q_h \\* q_w = 25", True),
        ((q, th, tw, 0, 5), ValueError, "q_h: expected an int in \\[1, 256\\]", False),
        ((q, th, tw, 4, 300), ValueError, "q_w: expected an int in \\[1, 256\\]", False),
        ((q, th.float(), tw, 4, 5), TypeError, "rel_pos_h: expected dtype torch.bfloat16", False),
        ((q, th, tw[:8], 4, 5), ValueError, "rel_pos_w: expected shape \\(9, 8\\)", False),
        ((q, th[:, :4], tw, 4, 5), ValueError, "rel_pos_h: expected shape \\(7, 8\\)", True),
        ((q, th[0], tw, 4, 5), ValueError, "rel_pos_h: expected 2 dimensions", False),
        ((q, th, tw.to("meta"), 4, 5), ValueError, "rel_pos_w: expected a tensor on cpu", True),
        ((torch.randn(1, 20, 300, dtype=torch.bfloat16), th, tw, 4, 5), ValueError, "q: expected a head dim", True),
    ]


@pytest.mark.parametrize("args, exc, match, wrapper", _bad_cases())
def test_bad_input_eager_fake_and_compiled(args, exc, match, wrapper):
    with pytest.raises(exc, match=match):
        OP(*args)
    if not any(isinstance(a, torch.Tensor) and a.device.type == "meta" for a in args):
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
            OP(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))
    if not wrapper:
        return
    q, th, tw, q_h, q_w = args
    # The wrapper checks before torch.ops, so under torch.compile the error leaves unwrapped (inside the op,
    # dynamo would wrap it in a TorchRuntimeError).
    for fn in (sam_rel_pos, torch.compile(sam_rel_pos, backend="aot_eager")):
        with pytest.raises(exc, match=match):
            fn(q, th, tw, (q_h, q_w), (q_h, q_w))


def test_compiled_wrapper_matches_eager():
    qkv = torch.randn(1, 20, 3, 2, 8)
    q = qkv.permute(2, 0, 3, 1, 4)[0]  # SAM's view of its qkv projection
    th, tw = _tables(4, 5, 8, torch.float32, "cpu")
    compiled = torch.compile(lambda *a: sam_rel_pos(*a, (4, 5), (4, 5)), backend="aot_eager", fullgraph=True)
    for got, want in zip(compiled(q, th, tw), sam_rel_pos(q, th, tw, (4, 5), (4, 5))):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


# ---- Triton kernel (CUDA, or the interpreter on CPU tensors) -------------------------------------------------------

needs_kernel = pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")


def _run_kernel_poisoned(monkeypatch, q, th, tw, q_h, q_w):
    """Launch with both outputs pre-filled with NaN and check every element was written."""
    from lowbit_flex.kernels import sam_rel_pos as mod

    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))
    rel_h, rel_w = mod.sam_rel_pos_triton(q, th, tw, q_h, q_w)
    assert_fully_written(rel_h, "rel_h")
    assert_fully_written(rel_w, "rel_w")
    return rel_h, rel_w


def _query(layout, b, h, q_h, q_w, d, dtype, device):
    n = q_h * q_w
    if layout == "sam_qkv":  # (B, H, L, D) view of a (B, L, 3, H, D) projection: token-major, strided
        return torch.randn(b, n, 3, h, d, device=device).to(dtype).permute(2, 0, 3, 1, 4)[0]
    if layout == "sam_3d":  # SAM's (B*H, L, D)
        return torch.randn(b * h, n, d, device=device).to(dtype)
    if layout == "expanded":  # one head broadcast over H (stride 0)
        return torch.randn(b, 1, n, d, device=device).to(dtype).expand(b, h, n, d)
    return torch.randn(b, h, n, d, device=device).to(dtype)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("layout", ["contiguous", "sam_qkv", "sam_3d", "expanded"])
@pytest.mark.parametrize("q_h, q_w, d", [
    (5, 7, 16),  # one partial block
    (14, 14, 80),  # SAM's window: blocks spanning five grid rows; D = 80 padded
    (7, 9, 64),  # an odd grid
    (9, 20, 24),  # blocks that start mid-row and span four rows
])  # fmt: skip
def test_kernel_matches_float64_and_writes_everything(monkeypatch, q_h, q_w, d, layout, dtype):
    q = _query(layout, 2, 2, q_h, q_w, d, dtype, kernel_device())
    th, tw = _tables(q_h, q_w, d, dtype, kernel_device())
    rel_h, rel_w = _run_kernel_poisoned(monkeypatch, q, th, tw, q_h, q_w)
    ref_h, ref_w = _reference_f64(q, th, tw, q_h, q_w)
    assert rel_h.shape == ref_h.shape and rel_w.shape == ref_w.shape and rel_h.dtype == dtype
    _assert_rounded_once(rel_h, ref_h)
    _assert_rounded_once(rel_w, ref_w)


@needs_kernel
@pytest.mark.parametrize("d", [64, 80, 128])
@pytest.mark.parametrize("q_h, q_w", [(14, 14), (64, 64), (48, 40), (7, 9), (1, 37), (37, 1), (3, 150)])
def test_kernel_issue_grids_batch_1(monkeypatch, q_h, q_w, d):
    """SAM's window and global grids, a non-square image grid, a small odd grid, 1 x N and N x 1 rows, and rows
    wider than one table window (150 columns: three windows of 64 table rows per block), batch 1."""
    q = _query("sam_qkv", 1, 2, q_h, q_w, d, torch.bfloat16, kernel_device())
    th, tw = _tables(q_h, q_w, d, torch.bfloat16, kernel_device())
    rel_h, rel_w = _run_kernel_poisoned(monkeypatch, q, th, tw, q_h, q_w)
    ref_h, ref_w = _reference_f64(q, th, tw, q_h, q_w)
    _assert_rounded_once(rel_h, ref_h)
    _assert_rounded_once(rel_w, ref_w)


@needs_kernel
def test_kernel_nan_stays_in_its_query_row(monkeypatch):
    q = _query("contiguous", 1, 2, 14, 14, 64, torch.bfloat16, kernel_device())
    th, tw = _tables(14, 14, 64, torch.bfloat16, kernel_device())
    clean = _run_kernel_poisoned(monkeypatch, q, th, tw, 14, 14)
    from lowbit_flex.kernels.sam_rel_pos import sam_rel_pos_triton

    q[0, 1, 100, 3] = float("nan")
    dirty = sam_rel_pos_triton(q, th, tw, 14, 14)
    for c, t in zip(clean, dirty):
        assert bool(t[0, 1, 100].isnan().all())
        t[0, 1, 100], c[0, 1, 100] = 0, 0
        torch.testing.assert_close(t, c, rtol=0, atol=0)


@needs_kernel
def test_empty_batch():
    q = torch.randn(0, 2, 20, 8, device=kernel_device())
    th, tw = _tables(4, 5, 8, torch.float32, kernel_device())
    rel_h, rel_w = OP(q, th, tw, 4, 5)
    assert rel_h.shape == (0, 2, 20, 4) and rel_w.shape == (0, 2, 20, 5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the eager fast path runs on CUDA tensors")
def test_eager_fast_path_matches_the_op_and_keeps_its_plan():
    mod = importlib.import_module("lowbit_flex.ops.sam_rel_pos")  # the package's attribute is the function

    q = _query("sam_qkv", 1, 12, 14, 14, 64, torch.bfloat16, "cuda")
    th, tw = _tables(14, 14, 64, torch.bfloat16, "cuda")
    mod._EAGER_PLANS.clear()
    for _ in range(2):
        got = sam_rel_pos(q, th, tw, (14, 14), (14, 14))
        for g, w in zip(got, OP(q, th, tw, 14, 14)):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert len(mod._EAGER_PLANS) == 1
    with pytest.raises(ValueError, match="q: expected L"):  # checked on the first call of a key, nothing kept
        sam_rel_pos(q[:, :, :100], th, tw, (14, 14), (14, 14))
    assert len(mod._EAGER_PLANS) == 1
