"""``lowbit::w4a8_linear``: per-token int8 quantization of a float input + the W4A8 GEMM, as one op.

CPU: the reference against an independent float64 definition, bad input from eager and fake paths, compile and
export. GPU: every dispatch path (the fused decode kernel at M <= 16, quantizer + GEMM above) against the exact
definition on fresh random inputs with poisoned outputs, and NaN rows kept to themselves."""

import importlib

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import assert_fully_written, assert_raises_eager_and_fake, kernel_device, poison_

OP = torch.ops.lowbit.w4a8_linear
on_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA dispatch paths need a GPU")


def _problem(lead, N, K, groups=None, dtype=torch.bfloat16, device="cpu", scale_span=(-6.0, 3.0)):
    """Fresh random float activations (rows of very different magnitudes), int4 weights with both extremes, weight
    scales log-uniform over ``scale_span`` decades."""
    x = torch.randn(*lead, K, dtype=torch.float64) * 10 ** (torch.rand(*lead, 1) * 4 - 2)
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    q.view(-1)[:2] = torch.tensor([-8, 7], dtype=torch.int8)
    ws = 10 ** (torch.rand((N,) if groups is None else (N, groups)) * (scale_span[1] - scale_span[0]) + scale_span[0])
    bias = torch.randn(N) * 10
    to = lambda t: t.to(device)
    return to(x.to(dtype)), to(pack_int4(q)), to(ws.float()), to(bias), q


def _exact(x, q, ws, bias):
    """Independent float64 definition: x quantized per row (amax / 127, round half to even, as IEEE float32
    division then rounding), exact integer dot products per group, scales applied in float64. Returns the value and
    the sum of |terms| (for the float32 rounding allowance)."""
    xf = x.float().cpu()
    s = xf.abs().amax(-1, keepdim=True) / 127
    s = torch.where(s == 0, torch.ones_like(s), s)
    xq = torch.round(xf / s).clamp(-127, 127).double()
    K, N = x.shape[-1], q.shape[0]
    groups = 1 if ws.dim() == 1 else ws.shape[1]
    xg, qg = xq.reshape(-1, groups, K // groups), q.double().reshape(N, groups, -1)
    dots = torch.einsum("mgk,ngk->mng", xg, qg)
    abs_dots = torch.einsum("mgk,ngk->mng", xg.abs(), qg.abs())  # sum |products|: what float32 sums round
    scales = s.double().reshape(-1, 1, 1) * ws.double().cpu().reshape(1, N, groups)
    out = (dots * scales).sum(-1) + bias.double().cpu()
    mag = (abs_dots * scales).sum(-1) + bias.double().cpu().abs()
    return out.reshape(*x.shape[:-1], N), mag.reshape(*x.shape[:-1], N)


def _assert_close(out, exact, mag, dtype, fp32_terms):
    finfo = torch.finfo(dtype)
    bound = exact.abs() * finfo.eps + finfo.tiny + fp32_terms * 2.0**-24 * mag
    err = (out.double().cpu() - exact).abs()
    assert bool((err <= bound).all()), f"max error over the bound: {float((err - bound).max()):.3g}"


@pytest.mark.parametrize("lead, N, K, groups, dtype", [
    ((1,), 40, 64, None, torch.bfloat16),
    ((3, 5), 24, 256, 4, torch.float16),    # 3-D input, group 64
    ((7,), 9, 96, 3, torch.float32),        # ragged N, group 32, float32 input -> bf16 output
])  # fmt: skip
def test_reference_matches_float64_definition(lead, N, K, groups, dtype):
    x, w, ws, bias, q = _problem(lead, N, K, groups, dtype, scale_span=(-3.0, -1.0))
    out = OP(x, w, ws, bias)
    assert out.shape == (*lead, N) and out.dtype == (dtype if dtype != torch.float32 else torch.bfloat16)
    exact, mag = _exact(x, q, ws, bias)
    _assert_close(out, exact, mag, out.dtype, fp32_terms=0)


def test_reference_is_the_composition_of_the_two_ops():
    x, w, ws, bias, _ = _problem((4,), 16, 128, 2)
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(x)
    expect = torch.ops.lowbit.s8s4_linear(xq, xs, w, ws, bias, torch.float16)
    torch.testing.assert_close(OP(x, w, ws, bias, torch.float16), expect, rtol=0, atol=0)


def _bad_cases():
    x, w, ws, b = torch.randn(4, 64), torch.zeros(8, 32, dtype=torch.int8), torch.ones(8), torch.zeros(8)
    ok = dict(x=x, weight=w, weight_scale=ws, bias=b)
    cases = [
        (dict(x=x.to(torch.int8)), TypeError, "x: expected dtype"),
        (dict(x=torch.randn(4, 48)), ValueError, "x: expected the last dimension K"),
        (dict(weight=w.float()), TypeError, "weight: expected dtype int8"),
        (dict(weight=torch.zeros(8, 31, dtype=torch.int8)), ValueError, r"weight: expected shape \(N, K // 2\)"),
        (dict(weight_scale=torch.ones(7)), ValueError, "weight_scale: expected shape"),
        (dict(weight_scale=torch.ones(8, 4)), ValueError, "weight_scale: expected shape"),  # group 16 < 32
        (dict(bias=torch.zeros(9)), ValueError, "bias: expected shape"),
        (dict(bias=b.long()), TypeError, "bias: expected dtype"),
        (dict(out_dtype=torch.float32), TypeError, "out_dtype: expected float16 or bfloat16"),
        (dict(bias=b.to("meta")), ValueError, "bias: expected a tensor on cpu"),
    ]
    return [({**ok, **change}, exc, match) for change, exc, match in cases]


@pytest.mark.parametrize("kwargs, exc, match", _bad_cases())
def test_bad_input_eager_and_fake(kwargs, exc, match):
    assert_raises_eager_and_fake(OP, kwargs, exc, match)


def test_compiled_equals_eager_and_export_keeps_one_node():
    x, w, ws, bias, _ = _problem((3,), 32, 64)
    f = lambda x: OP(x, w, ws, bias)
    torch.testing.assert_close(torch.compile(f, fullgraph=True, backend="aot_eager")(x), f(x), rtol=0, atol=0)

    class M(torch.nn.Module):
        def forward(self, x):
            return OP(x, w, ws, bias)

    ep = torch.export.export(M(), (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets == [torch.ops.lowbit.w4a8_linear.default]


def test_eager_entry_takes_the_op_wherever_the_dispatcher_matters():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from lowbit_flex.ops.eager import needs_dispatcher
    from lowbit_flex.ops.w4a8_linear import w4a8_linear_eager

    x, w, ws, bias, _ = _problem((3,), 40, 256, 4)
    assert needs_dispatcher(x)  # CPU
    torch.testing.assert_close(w4a8_linear_eager(x, w, ws, bias), OP(x, w, ws, bias), rtol=0, atol=0)
    with FakeTensorMode() as mode:
        assert needs_dispatcher(mode.from_tensor(x))
    meta = torch.empty(3, 256, device="meta")
    assert needs_dispatcher(meta)
    if torch.cuda.is_available():
        xc = x.cuda()
        assert not needs_dispatcher(xc)
        assert needs_dispatcher(xc.clone().requires_grad_())
        with torch.device("cuda"):  # a torch function mode
            assert needs_dispatcher(xc)
        args = (w.cuda(), ws.cuda(), bias.cuda())
        torch.testing.assert_close(w4a8_linear_eager(xc, *args), OP(xc, *args), rtol=0, atol=0)


# --- GPU: every dispatch path ---------------------------------------------------------------------------------------
@on_gpu
@pytest.mark.parametrize("M", [1, 2, 3, 7, 16, 17, 33, 4096])
@pytest.mark.parametrize("groups", [None, 2, 4, 8, 16])  # K = 512: groups of 256, 128, 64, 32
@pytest.mark.parametrize("N", [40, 136])
def test_cuda_matches_exact_definition(monkeypatch, M, groups, N):
    from lowbit_flex.kernels import s8s4_decode, s8s4_gemv, s8s4_linear

    real_empty = torch.empty
    for mod in (s8s4_decode, s8s4_gemv, s8s4_linear):  # every output and workspace the kernels allocate starts as NaN
        monkeypatch.setattr(mod.torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    x, w, ws, bias, q = _problem((M,), N, 512, groups, torch.bfloat16, device="cuda")
    out = OP(x, w, ws, bias)
    assert_fully_written(out)
    exact, mag = _exact(x, q, ws, bias)
    _assert_close(out, exact, mag, torch.bfloat16, fp32_terms=512 // 32 + 4)  # <= one float32 add per K block


@on_gpu
@pytest.mark.parametrize("lead", [(1,), (3,), (7,), (16,), (2, 3), (17,)])  # (17,): the GEMM path, the op's body
@pytest.mark.parametrize("groups", [None, 4, 8])  # K = 512: per channel, groups of 128 (the CUDA GEMV), of 64
@pytest.mark.parametrize("x_dtype, scale_dtype, with_bias", [
    (torch.bfloat16, torch.float32, True),
    (torch.float32, torch.float32, False),  # a float32 x: bf16 output
    (torch.float16, torch.bfloat16, True),  # scales the kernels read as a float32 copy
])  # fmt: skip
def test_eager_plans_launch_what_the_op_launches(monkeypatch, lead, groups, x_dtype, scale_dtype, with_bias):
    """The planned eager calls of ``w4a8_linear_eager`` (one plan per metadata key, the CUDA GEMV bound to it) give
    the op's output bit for bit, into poisoned outputs, on the first call with a key and on a later call with fresh
    tensors of the same metadata (the plan reads their addresses, not the first call's)."""
    mod = importlib.import_module("lowbit_flex.ops.w4a8_linear")  # the package attribute is the op

    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    mod._EAGER_PLANS.clear()
    for _ in range(2):
        x, w, ws, bias, _ = _problem(lead, 136, 512, groups, x_dtype, device="cuda")
        ws, bias = ws.to(scale_dtype), bias if with_bias else None
        out = mod.w4a8_linear_eager(x, w, ws, bias)
        assert_fully_written(out)
        torch.testing.assert_close(out, OP(x, w, ws, bias), rtol=0, atol=0)
    (plan,) = mod._EAGER_PLANS.values()
    assert (plan is mod._BODY) == (lead == (17,))  # every decode-sized call runs planned


@pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("lead, groups", [((1,), None), ((3,), 2), ((2, 2), None), ((17,), None)])
def test_eager_plans_match_the_exact_definition(monkeypatch, lead, groups):
    """The eager plans wherever the Triton kernels run: on CPU under the interpreter too, by letting CPU tensors skip
    the dispatcher as CUDA ones do (``(17,)``: the GEMM path, planned as the op's body). A first and a later call
    with fresh tensors of one metadata key, into poisoned outputs."""
    mod = importlib.import_module("lowbit_flex.ops.w4a8_linear")
    monkeypatch.setattr(mod, "needs_dispatcher", lambda x: False)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    mod._EAGER_PLANS.clear()
    for _ in range(2):
        x, w, ws, bias, q = _problem(lead, 40, 256, groups, torch.bfloat16, device=kernel_device())
        out = mod.w4a8_linear_eager(x, w, ws, bias)
        assert_fully_written(out)
        exact, mag = _exact(x, q, ws, bias)
        _assert_close(out, exact, mag, torch.bfloat16, fp32_terms=256 // 32 + 4)
    (plan,) = mod._EAGER_PLANS.values()
    assert (plan is mod._BODY) == (lead == (17,))


@on_gpu
@pytest.mark.parametrize("N", [64, 512])  # deep: quantized first in the GEMV's call; wide: quantized in the GEMV
def test_eager_plans_check_bad_input_and_take_the_body_for_views(N):
    mod = importlib.import_module("lowbit_flex.ops.w4a8_linear")  # the package attribute is the op

    mod._EAGER_PLANS.clear()
    x, w, ws, bias, _ = _problem((1,), N, 256, None, device="cuda")
    with pytest.raises(ValueError, match="bias"):
        mod.w4a8_linear_eager(x, w, ws, bias[:32])
    with pytest.raises(ValueError, match="bias"):  # nothing was cached for it: the next call checks again
        mod.w4a8_linear_eager(x, w, ws, bias[:32])
    assert not mod._EAGER_PLANS
    expected = OP(x, w, ws, bias)
    wide = torch.zeros(1, 512, dtype=x.dtype, device="cuda")
    flat = torch.zeros(256 + 8, dtype=x.dtype, device="cuda")
    inputs = {
        "strided": wide[:, ::2],  # not contiguous: the body, which copies it
        "aligned view": flat[8:].view(1, 256),  # contiguous, base 16 bytes in
        "misaligned view": flat[1:257].view(1, 256),  # contiguous, base 2 bytes in: the body (the GEMV needs 16)
    }
    for name, xx in inputs.items():
        xx.copy_(x)
        torch.testing.assert_close(mod.w4a8_linear_eager(xx, w, ws, bias), expected, rtol=0, atol=0, msg=name)
    assert len(mod._EAGER_PLANS) == 3
    from lowbit_flex.kernels.s8s4_dispatch import Backend

    cuda_gemv = mod._decode_path(x.device, 1, N, 256, None).backend is Backend.CUDA_GEMV  # bound where it runs
    assert sum(plan is mod._BODY for plan in mod._EAGER_PLANS.values()) == (2 if cuda_gemv else 1)


@on_gpu
@pytest.mark.parametrize("M", [1, 16])
@pytest.mark.parametrize("K, groups", [(4096, None), (8192, None), (14336, 112)])
def test_cuda_long_reductions_match_exact_definition(M, K, groups):
    """Decode-sized M with the K of real layers: many K blocks per program and split-K partials."""
    x, w, ws, bias, q = _problem((M,), 136, K, groups, torch.bfloat16, device="cuda")
    out = OP(x, w, ws, bias)
    exact, mag = _exact(x, q, ws, bias)
    _assert_close(out, exact, mag, torch.bfloat16, fp32_terms=K // 256 + 4)


@on_gpu
def test_cuda_nan_row_does_not_spread():
    x, w, ws, bias, q = _problem((5,), 64, 256, 2, device="cuda")
    x[2, 17] = float("nan")
    out = OP(x, w, ws, bias)
    keep = torch.tensor([0, 1, 3, 4])
    exact, mag = _exact(x[keep], q, ws, bias)
    _assert_close(out[keep.cuda()], exact, mag, torch.bfloat16, fp32_terms=6)


@on_gpu
def test_cuda_compiled_graph_launches_the_decode_kernel_directly():
    from torch._inductor.utils import run_and_get_code

    x, w, ws, bias, _ = _problem((1,), 256, 1024, 8, device="cuda")
    f = torch.compile(lambda x: OP(x, w, ws, bias), fullgraph=True)
    out, code = run_and_get_code(f, x)
    torch.testing.assert_close(out, OP(x, w, ws, bias), rtol=0, atol=0)
    # M = 1 on Hopper: the CUDA GEMV as its op (AOTInductor calls it by name); elsewhere the Triton kernel itself.
    cuda_gemv = torch.cuda.get_device_capability() == (9, 0)
    assert ("w4a8_gemv_cuda" if cuda_gemv else "_s8s4_gemv_kernel") in "\n".join(code)
