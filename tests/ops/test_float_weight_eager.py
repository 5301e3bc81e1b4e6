"""The weight-only modules' eager fast path (``ops/float_weight_eager.py``): checks once per metadata key, bad input
never cached, and on CUDA the bound launches equal to the op through the dispatcher and within rounding of float64,
every output element written."""

import importlib

import pytest
import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.nn import FP8WeightOnlyLinear, FPxWeightOnlyLinear
from lowbit_flex.ops import float_weight_eager as fe
from lowbit_flex.quant import E2M1_FN, E3M2_FN, E4M3FN, from_fpx_bits, pack_fpx_tiles
from lowbit_flex.testing import assert_fully_written, poison_
from tests.ops._weight_only_reference import assert_within, exact_linear

fpx_op = importlib.import_module("lowbit_flex.ops.fpx_weight_only_linear")  # (the package exports the op's name)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the fast path launches CUDA kernels")


def _fp4_args(m, k, n, gen):
    codes = torch.randint(0, 16, (n, k), dtype=torch.uint8, generator=gen)
    x = torch.randn(m, k, generator=gen).to(torch.bfloat16)
    return x, pack_fpx_tiles(codes, 4), torch.rand(n, generator=gen) + 0.5, codes


def test_checks_run_once_per_key_and_bad_input_is_never_cached():
    gen = torch.Generator().manual_seed(0)
    x, w, s, codes = _fp4_args(3, 200, 24, gen)
    checks = []

    def check(*args):
        checks.append(1)
        fpx_op._eager_check(*args)

    fe._PLANS.clear()
    for _ in range(3):  # fresh values, same metadata: one check
        x = torch.randn(x.shape, generator=gen).to(torch.bfloat16)
        out = fe.float_weight_only_eager(x, w, s, None, 2, 1, check, fpx_op._eager_body)
        exact, bound = exact_linear(x, from_fpx_bits(codes, E2M1_FN, torch.float64), s, None)
        assert_within(out, exact, bound)
    assert len(checks) == 1
    bad = s[:-1]  # one scale short
    for i in range(2):  # raises every time: nothing was cached for it
        with pytest.raises(ValueError, match="w_scale"):
            fe.float_weight_only_eager(x, w, bad, None, 2, 1, check, fpx_op._eager_body)
        assert len(checks) == 2 + i
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):  # no metadata: the body's checks answer
        fe.float_weight_only_eager([1.0], w, s, None, 2, 1, check, fpx_op._eager_body)


def _module(fmt, k, n, bias, gen):
    lin = torch.nn.Linear(k, n, bias=bias, dtype=torch.bfloat16)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=gen) * 0.1)
        if bias:
            lin.bias.copy_(torch.randn(n, generator=gen))
    if fmt.bits == 8:
        mod = FP8WeightOnlyLinear.from_linear(lin)
        w64 = mod.weight.double()
    else:
        mod = FPxWeightOnlyLinear.from_linear(lin, fmt.ebits, fmt.mbits)
        from lowbit_flex.quant import unpack_fpx_tiles

        w64 = from_fpx_bits(unpack_fpx_tiles(mod.weight, fmt.bits, k), fmt, torch.float64)
    return mod, w64


@cuda
@pytest.mark.parametrize("fmt", [E4M3FN, E3M2_FN, E2M1_FN], ids=lambda f: f"e{f.ebits}m{f.mbits}")
@pytest.mark.parametrize("m", [1, 2, 5, 16, 17, 64, 300])
@pytest.mark.parametrize("bias", [False, True])
def test_module_calls_match_the_dispatcher_and_float64(fmt, m, bias, monkeypatch):
    gen = torch.Generator().manual_seed(m)
    k, n = 1040, 264  # ragged against every tile (K: 8 x 128 + 16; N: 16 x 16 + 8)
    mod, w64 = _module(fmt, k, n, bias, gen)
    mod = mod.cuda()
    op = torch.ops.lowbit.fp8_weight_only_linear if fmt.bits == 8 else torch.ops.lowbit.fpx_weight_only_linear
    fmt_args = () if fmt.bits == 8 else (fmt.ebits, fmt.mbits)
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))  # outputs, partials
    fe._PLANS.clear()
    for shape in [(m, k), (m, k), (1, m, k)]:  # the second call takes the cached plan; a 3-d batch its own key
        x = torch.randn(shape, generator=gen).to(torch.bfloat16).cuda()
        with torch.no_grad():
            out = mod(x)
            want = op(x, mod.weight, mod.weight_scale, *fmt_args, mod.bias)
        assert out.shape == (*shape[:-1], n)
        assert_fully_written(out)
        assert torch.equal(out, want)  # the same kernels as the op's body
        scale, bias64 = mod.weight_scale.cpu(), None if mod.bias is None else mod.bias.cpu()
        w_ref = w64
        if _dequantizes_first(fmt, m, n, k):  # the body's dequantize + cuBLAS rounds the scaled weight to bf16 once
            w_ref, scale = (w64 * scale.double()[:, None]).to(torch.bfloat16).double(), torch.ones_like(scale)
        exact, bound = exact_linear(x.reshape(-1, k).cpu(), w_ref, scale, bias64)
        assert_within(out.reshape(-1, n), exact, bound)
    assert len(fe._PLANS) == 2


def _dequantizes_first(fmt, m, n, k) -> bool:
    """Whether the table sends the call to the dequantize + cuBLAS path (the route's own rule: every backend this
    device and library run; a rule chosen without the CUDA GEMM's rows sent fp6 at M = 300 there, H100 run 56)."""
    from lowbit_flex.kernels import float_weight_dispatch as d

    return d.table_rule(torch.device("cuda"), fmt.bits, m, n, k, tma=True).backend is d.Backend.DEQUANT_MM


@cuda
def test_views_and_launch_hooks_take_the_body():
    import triton

    from lowbit_flex.kernels import float_weight_dispatch as d

    gen = torch.Generator().manual_seed(1)
    mod, w64 = _module(E4M3FN, 256, 48, True, gen)
    mod = mod.cuda()
    # 16 rows of fp8: a Triton tile, which launch hooks see (the CUDA library's kernels, ctypes calls, take fp4 and
    # fp6 at every M on sm_90, and fp8 at M <= 2)
    rule = d.table_rule(torch.device("cuda"), 8, 16, 48, 256, tma=True)
    assert rule.backend in (d.Backend.DOT, d.Backend.TMA, d.Backend.GEMV, d.Backend.GLUON), rule
    base = torch.randn(16, 2 * 256 + 1, generator=gen).to(torch.bfloat16).cuda()
    views = [base[:, :256], base[:, 1:257]]  # strided rows; and a base off 16-byte alignment
    calls = []
    hooks = triton.knobs.runtime
    old = hooks.launch_enter_hook
    for hooked in (False, True):
        hooks.launch_enter_hook = (lambda *a: calls.append(1)) if hooked else old
        try:
            for x in [*views, base[:, :256].contiguous()]:
                with torch.no_grad():
                    out = mod(x)
                exact, bound = exact_linear(x.cpu(), w64, mod.weight_scale.cpu(), mod.bias.cpu())
                assert_within(out, exact, bound)
        finally:
            hooks.launch_enter_hook = old
    assert calls  # the hooked calls launched through Triton's own path, which the hook sees
