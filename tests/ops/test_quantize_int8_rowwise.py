import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.testing import assert_fully_written, kernel_device, poison_

OP = torch.ops.lowbit.quantize_int8_rowwise


def _reference_f64(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The definition in float64, written independently of the op's reference."""
    x64 = x.double()
    scale = x64.abs().amax(dim=-1, keepdim=True) / 127
    scale[scale == 0] = 1
    return torch.round(x64 / scale).clamp(-127, 127), scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (2, 5, 64), (7, 1000)])
def test_reference_matches_float64_definition(shape, dtype):
    x = torch.randn(shape, dtype=dtype) * torch.logspace(-3, 3, shape[-1]).to(dtype)
    xq, scale = OP(x)
    q64, s64 = _reference_f64(x)
    assert xq.dtype == torch.int8 and scale.dtype == torch.float32
    assert scale.shape == (*shape[:-1], 1)
    torch.testing.assert_close(scale.double(), s64, rtol=2**-23, atol=0)  # one float32 rounding of amax / 127
    # The float32 division may round differently from float64 only right at a .5 boundary: at most one step.
    assert (xq.double() - q64).abs().max() <= 1
    assert (xq.double() - q64).abs().gt(0).float().mean() <= 0.01
    # Dequantization error bound: |x - xq * scale| <= scale / 2 (+ float32 rounding).
    err = (x.double() - xq.double() * scale.double()).abs()
    assert bool((err <= scale.double() * (0.5 + 1e-5)).all())


def test_zero_rows_and_extremes():
    x = torch.randn(4, 32)
    x[1] = 0
    x[2, 3] = 1e30
    x[3] = 1e-30
    xq, scale = OP(x)
    assert scale[1].item() == 1.0 and bool((xq[1] == 0).all())
    assert xq[2, 3].item() == 127 and xq.abs().max().item() == 127
    assert bool((xq[3].abs().max() == 127).item())


@pytest.mark.parametrize("bad, exc, match", [
    (torch.randint(0, 5, (4, 8), dtype=torch.int32), TypeError, "x: expected dtype"),
    (torch.randn(()), ValueError, "x: expected at least 1 dimensions"),
    (torch.randn(4, 0), ValueError, "x: expected a non-empty last dimension"),
    # Non-tensors never reach our checks: the dispatcher rejects them against the schema, naming the argument.
    ("not a tensor", RuntimeError, "type 'Tensor' for argument 'x'"),
])  # fmt: skip
def test_bad_input_eager_and_fake(bad, exc, match):
    with pytest.raises(exc, match=match):
        OP(bad)
    if isinstance(bad, torch.Tensor):
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
            OP(mode.from_tensor(bad))


@pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1), (5, 33), (3, 4, 128), (2, 20000)])  # 20000: the two-pass path
def test_triton_kernel_bit_exact_with_reference(shape, dtype):
    from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

    dev = kernel_device()
    x = (torch.randn(shape, dtype=torch.float32) * 3).to(dtype)
    x.view(-1)[:: max(1, x.numel() // 7)] *= 100  # a few outliers per tensor
    ref_q, ref_s = OP(x)  # CPU reference
    xq, scale = quantize_int8_rowwise_triton(x.to(dev))
    assert xq.shape == x.shape and scale.shape == (*shape[:-1], 1)
    torch.testing.assert_close(scale.cpu(), ref_s, rtol=0, atol=0)
    torch.testing.assert_close(xq.cpu(), ref_q, rtol=0, atol=0)


@pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("config", ["rule", "stepped", "one pass", "chunks"])
def test_triton_kernel_configs_bit_exact_on_long_rows(config):
    """Every launch config the rule picks for rows of 8192 < K <= 16384 (in 4096-value steps at prefill M, the
    whole row in one program between, 1024-value chunks of the row at decode M) gives the reference's bits, on a
    ragged row length (the last chunk partial)."""
    from lowbit_flex.kernels.quantize_int8_rowwise import RowConfig, quantize_int8_rowwise_triton

    cfg = {
        "rule": None, "stepped": RowConfig(4096, 8, single_pass=False), "one pass": RowConfig(16384, 16),
        "chunks": RowConfig(16384, 8, chunk=1024),
    }[config]  # fmt: skip
    x = torch.randn(3, 9000, dtype=torch.bfloat16) * 5
    x[1, 8999] = 300.0  # the row's amax in the last, partial step
    ref_q, ref_s = OP(x)
    xq, scale = quantize_int8_rowwise_triton(x.to(kernel_device()), cfg)
    torch.testing.assert_close(scale.cpu(), ref_s, rtol=0, atol=0)
    torch.testing.assert_close(xq.cpu(), ref_q, rtol=0, atol=0)


def test_pick_config_steps_long_rows_at_prefill_only():
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    from lowbit_flex.kernels.quantize_int8_rowwise import RowConfig, pick_config

    stepped = RowConfig(4096, 8, single_pass=False)
    assert pick_config(4096, 14336) == stepped and pick_config(2048, 11008) == stepped
    assert pick_config(16, 14336) == RowConfig(16384, 8, chunk=1024)  # decode: the row over 14 programs
    assert pick_config(2, 4096) == RowConfig(4096, 8, chunk=1024)
    assert pick_config(33, 14336) == RowConfig(16384, 16)  # past decode M: the whole row, 16 warps
    assert pick_config(16, 1024) == RowConfig(1024, 4, block_m=4)  # short rows share a program
    assert pick_config(4096, 8192) == RowConfig(8192, 8)  # power-of-two rows keep one pass
    assert pick_config(4096, 20000) == RowConfig(4096, 4, single_pass=False)
    assert pick_config(8, 64) == RowConfig(64, 4, block_m=64)
    # a dynamic batch: picks by its example value, with no guard on it
    env = ShapeEnv()
    m = env.create_unspecified_symint_and_symbol(4096, ConstantSource("M"), DimDynamic.DYNAMIC)
    assert pick_config(m, 14336) == stepped and not env.guards


@pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")
def test_triton_kernel_writes_every_element(monkeypatch):
    from lowbit_flex.kernels import quantize_int8_rowwise as mod

    dev = kernel_device()
    x = torch.randn(37, 300, device=dev)
    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    xq, scale = mod.quantize_int8_rowwise_triton(x)
    assert_fully_written(xq, "xq")
    assert_fully_written(scale, "scale")


@pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")
def test_triton_kernel_non_contiguous_input():
    from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

    x = torch.randn(16, 64, device=kernel_device()).t()  # last-dim stride != 1
    xq, scale = quantize_int8_rowwise_triton(x)
    rq, rs = OP(x.cpu())
    torch.testing.assert_close(xq.cpu(), rq, rtol=0, atol=0)
    torch.testing.assert_close(scale.cpu(), rs, rtol=0, atol=0)
