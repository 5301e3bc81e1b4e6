"""Module casts keep the storage formats of every quantized module: codes, packed weights and scales keep their
dtypes and bits through ``.to(dtype)``, ``.half()``, ``.bfloat16()``, ``.float()``, ``.to(device)``; the bias and
the output follow the activation dtype. float32 models quantize with every config and compute in bfloat16."""

import copy
import zlib

import pytest
import torch
from torch import nn

from lowbit_flex.nn import (
    FP8WeightOnlyLinear,
    FPxWeightOnlyLinear,
    W4A8Linear,
    quantize_,
)
from lowbit_flex.nn._storage import QuantizedModule
from lowbit_flex.testing import rel_error
from tests._configs import CONFIGS

_HALF = (torch.float16, torch.bfloat16)

# (name, cast, the dtype the float tensors end in: None keeps the model's)
CASTS = [
    ("to_bf16", lambda m: m.to(torch.bfloat16), torch.bfloat16),
    ("half", lambda m: m.half(), torch.float16),
    ("bfloat16", lambda m: m.bfloat16(), torch.bfloat16),
    ("float", lambda m: m.float(), torch.float32),
    ("to_cpu", lambda m: m.to("cpu"), None),
    ("to_device_dtype", lambda m: m.to(torch.device("cpu"), torch.float16), torch.float16),
    ("to_kwargs", lambda m: m.to(device="cpu", dtype=torch.float32), torch.float32),
]


def _model(dtype, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 32, bias=False)).to(dtype)


def _storage(model):
    return {
        f"{fqn}.{name}": getattr(m, name).clone()
        for fqn, m in model.named_modules()
        if isinstance(m, QuantizedModule)
        for name in m.storage_buffers
        if getattr(m, name) is not None
    }


def _same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))


def _expected(layer, x):
    """What a quantized layer computes for ``x`` by the rule: in ``x``'s dtype when it is fp16/bf16, else in
    bfloat16 with the output cast to ``x``'s dtype; the bias in the compute dtype (W4A8: float32)."""
    dtype = x.dtype if x.dtype in _HALF else torch.bfloat16
    bias = layer.bias
    if isinstance(layer, W4A8Linear):  # the op quantizes float32 activations itself, adds the bias in float32
        out = torch.ops.lowbit.w4a8_linear(x, layer.weight, layer.weight_scale, bias, dtype)
    else:
        xc, bias = x.to(dtype), None if bias is None else bias.to(dtype)
        if isinstance(layer, FP8WeightOnlyLinear):
            out = torch.ops.lowbit.fp8_weight_only_linear(xc, layer.weight, layer.weight_scale, bias)
        else:
            out = torch.ops.lowbit.fpx_weight_only_linear(
                xc, layer.weight, layer.weight_scale, layer.ebits, layer.mbits, bias
            )  # fmt: skip
    return out.to(x.dtype)


@pytest.mark.parametrize("source", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("name, cast, dtype", CASTS, ids=[c[0] for c in CASTS])
@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_cast_keeps_storage_and_moves_bias_and_compute(config, name, cast, dtype, source):
    model = quantize_(_model(source, seed=zlib.crc32(f"{config}{name}".encode())), config)
    assert all(isinstance(m, QuantizedModule) for m in (model[0], model[2]))
    before = _storage(model)
    bias = model[0].bias.clone()
    assert cast(model) is model
    for key, t in _storage(model).items():
        assert _same_bits(t, before[key]), key
    kept = "bias" in model[0].storage_buffers  # W4A8: the kernels read a float32 bias
    target = bias.dtype if kept or dtype is None else dtype
    assert model[0].bias.dtype == target and torch.equal(model[0].bias, bias.to(target))
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(1)).to(dtype or source)
    h = model[1](model[0](x))
    assert h.dtype == x.dtype and torch.equal(model[0](x), _expected(model[0], x))
    assert torch.equal(model(x), _expected(model[2], h))


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_float32_model_quantizes_and_computes_in_bf16(config):
    model = _model(torch.float32, seed=3)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(4))
    ref = model(x)
    quantize_(model, config)
    assert not any(type(m) is nn.Linear for m in model.modules())
    out = model(x)
    assert out.dtype == torch.float32 and rel_error(out, ref) < 0.3
    # Casting a quantized bf16 model to float32 gives the module quantize_ makes from the float32 cast of that model.
    cast_after = quantize_(_model(torch.float32, seed=3).bfloat16(), config).float()
    cast_before = quantize_(_model(torch.float32, seed=3).bfloat16().float(), config)
    for key, t in cast_before.state_dict().items():
        assert _same_bits(cast_after.state_dict()[key], t), key
    torch.testing.assert_close(cast_after(x), cast_before(x), rtol=0, atol=0)


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_to_empty_and_deepcopy_keep_storage_dtypes(config):
    with torch.device("meta"):
        model = _model(torch.bfloat16, seed=0)
    quantize_(model, config)
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    model.to_empty(device="cpu")
    assert {k: v.dtype for k, v in model.state_dict().items()} == dtypes
    assert all(v.device.type == "cpu" for v in model.state_dict().values())
    copied = copy.deepcopy(model).half()
    assert all(copied.state_dict()[k].dtype == model.state_dict()[k].dtype for k in _storage(model))


def test_storage_buffers_are_buffers_of_every_module():
    modules = [W4A8Linear(64, 8), FP8WeightOnlyLinear(64, 8), FPxWeightOnlyLinear(64, 8, 3, 2)]
    for m in modules:
        assert all(name in m._buffers for name in m.storage_buffers), type(m).__name__
    assert "bias" in modules[0].storage_buffers and all("bias" not in m.storage_buffers for m in modules[1:])
