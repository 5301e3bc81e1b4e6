import os

import pytest
import torch
from torch import nn

from lowbit_flex import W4A8Config, quantize_
from lowbit_flex.nn import W4A8Linear
from lowbit_flex.quant import unpack_int4
from lowbit_flex.testing import rel_error, run_exported_in_fresh_process


def _model(dtype=torch.float32):
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))  # fresh weights each run, reproducible in-process
    return nn.Sequential(nn.Linear(64, 96), nn.GELU(), nn.Linear(96, 128, bias=False), nn.Linear(128, 40)).to(dtype)


def _dequantized_f64(layer: W4A8Linear, x: torch.Tensor) -> torch.Tensor:
    """What a W4A8 layer computes, in float64: per-token int8 activations × dequantized int4 weights."""
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(x)
    g = layer.group_size or layer.in_features
    w = unpack_int4(layer.weight).double().view(layer.out_features, -1, g)
    w = (w * layer.weight_scale.double().view(layer.out_features, -1, 1)).view(layer.out_features, -1)
    out = (xq.double() * xs.double()) @ w.t()
    return out + layer.bias.double() if layer.bias is not None else out


@pytest.mark.parametrize("group_size", [None, 32])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantize_replaces_linears_and_is_accurate(group_size, dtype):
    model = _model(dtype)
    x = torch.randn(2, 5, 64, dtype=dtype)
    ref = model(x)
    quantize_(model, W4A8Config(group_size))
    assert all(isinstance(model[i], W4A8Linear) for i in (0, 2, 3)) and model[2].bias is None
    out = model(x)
    assert out.dtype == dtype and out.shape == ref.shape
    # Each layer matches its dequantized float64 definition up to one bf16 rounding of the output.
    h = model[1](model[0](x))
    assert rel_error(model[0](x), _dequantized_f64(model[0], x)) <= 2**-8
    assert rel_error(model[2](h), _dequantized_f64(model[2], h)) <= 2**-8
    # And the whole model stays close to the float one (int4 weights: ~10% per layer at most).
    assert rel_error(out, ref) < 0.2


def test_groupwise_is_more_accurate_than_per_channel():
    lin = nn.Linear(256, 64)
    lin.weight.data *= torch.logspace(-2, 0, 256)  # input channels of very different ranges: groups help
    x = torch.randn(8, 256)
    ref = lin(x)
    err = {g: rel_error(W4A8Linear.from_linear(lin, g)(x), ref) for g in (None, 32)}
    assert err[32] < err[None]


def test_skipped_layers_are_listed_in_a_warning():
    model = nn.Sequential(nn.Linear(64, 40), nn.Linear(40, 96), nn.Linear(96, 8))
    with pytest.warns(UserWarning, match=r"kept 2 layer\(s\) unquantized: 1 \(in_features=40 is not a multiple of 32\)"
                      r"; 2 \(in_features=96 is not a multiple of group_size=64\)"):  # fmt: skip
        quantize_(model, W4A8Config(group_size=64))
    assert isinstance(model[0], W4A8Linear) and type(model[1]) is nn.Linear and type(model[2]) is nn.Linear


@pytest.mark.parametrize("bad", [0, 48, -32, True, 64.0])
def test_config_validation(bad):
    with pytest.raises(ValueError, match="group_size: expected None or a positive multiple of 32"):
        W4A8Config(group_size=bad)


def test_state_dict_round_trip(tmp_path):
    a, b = quantize_(_model(), W4A8Config(32)), quantize_(_model(), W4A8Config(32))
    x = torch.randn(3, 64)
    assert not torch.equal(a(x), b(x))
    torch.save(a.state_dict(), tmp_path / "sd.pt")
    b.load_state_dict(torch.load(tmp_path / "sd.pt"))
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


def test_compile_fullgraph_no_graph_breaks():
    model = quantize_(_model(torch.bfloat16), W4A8Config())
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # fake impls traced, no graph break allowed
    torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)


def test_export_save_load_in_a_fresh_process(tmp_path):
    model = quantize_(_model(torch.bfloat16), W4A8Config(group_size=32))
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    ep = torch.export.export(model, (x,))
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count(torch.ops.lowbit.w4a8_linear.default) == 3  # one op per layer: the decode kernel fuses
    out = run_exported_in_fresh_process(ep, (x,), tmp_path)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
