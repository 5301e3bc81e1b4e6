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


def _mult_model(dtype=torch.float32):
    """Layers whose in_features take group 128 (the multiplier format's kernel groups)."""
    torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
    return nn.Sequential(nn.Linear(256, 128), nn.GELU(), nn.Linear(128, 48, bias=False)).to(dtype)


def test_group_multipliers_buffers_are_the_float_scales_exactly():
    lin = nn.Linear(512, 48)
    lin.weight.data *= torch.logspace(-3, 0, 512)  # groups of very different ranges: multipliers 1..16
    layer = W4A8Linear.from_linear(lin, 128, group_multipliers=True)
    mult, channel = layer.weight_group_mult, layer.weight_channel_scale
    assert mult.shape == (4, 48) and mult.dtype == torch.int8 and mult.is_contiguous()
    assert channel.shape == (48,) and channel.dtype == torch.float32
    # (a row's largest group takes 16, or 15 where rounding its scale down fits it better)
    assert int(mult.min()) >= 1 and int(mult.max()) in (15, 16) and len(mult.unique()) >= 3
    assert torch.equal(layer.weight_scale.double(), channel.double()[:, None] * mult.t().double())
    assert "group_multipliers=True" in repr(layer)
    plain = W4A8Linear.from_linear(lin, 128)
    assert plain.weight_group_mult is None and plain.weight_channel_scale is None
    x = torch.randn(6, 512)
    # Close to free float group scales (within a few % of weight error either way), far better than per channel.
    ref = lin(x)
    err = {k: rel_error(m(x), ref) for k, m in (("mult", layer), ("float", plain),
                                                   ("channel", W4A8Linear.from_linear(lin)))}  # fmt: skip
    assert err["mult"] < 1.15 * err["float"] and err["mult"] < err["channel"]


def test_group_multipliers_layer_computes_its_float_scales_definition():
    model = quantize_(_mult_model(), W4A8Config(128, group_multipliers=True))
    x = torch.randn(2, 3, 256)
    assert all(model[i].weight_group_mult is not None for i in (0, 2))
    assert rel_error(model[0](x), _dequantized_f64(model[0], x)) <= 2**-8
    # The op given the multipliers too computes exactly what it computes from the float scales alone (on CPU it
    # reads weight_scale; on a GPU kernels may read either form of the same scales).
    layer = model[0]
    plain = torch.ops.lowbit.w4a8_linear(x, layer.weight, layer.weight_scale, layer.bias, None)
    torch.testing.assert_close(layer(x), plain.float(), rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [(dict(group_multipliers=True), ValueError, "group_multipliers: expected a group_size"),
     (dict(group_size=128, group_multipliers=1), TypeError, "group_multipliers: expected a bool")],
)  # fmt: skip
def test_group_multipliers_config_validation(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        W4A8Config(**kwargs)


def test_group_multipliers_state_dict_into_meta_built_model_and_casts_keep_dtypes(tmp_path):
    config = W4A8Config(128, group_multipliers=True)
    a = quantize_(_mult_model(), config)
    torch.save(a.state_dict(), tmp_path / "sd.pt")
    with torch.device("meta"):
        b = _mult_model()
    quantize_(b, config)
    assert b[0].weight_group_mult.is_meta
    b.load_state_dict(torch.load(tmp_path / "sd.pt"), assign=True)
    b = b.bfloat16()  # module casts keep the storage buffers' dtypes
    assert b[0].weight_group_mult.dtype == torch.int8 and b[0].weight_channel_scale.dtype == torch.float32
    x = torch.randn(3, 256)
    torch.testing.assert_close(b(x.bfloat16()), a(x.bfloat16()), rtol=0, atol=0)


def test_group_multipliers_export_keeps_one_op_per_layer(tmp_path):
    model = quantize_(_mult_model(torch.bfloat16), W4A8Config(128, group_multipliers=True))
    x = torch.randn(2, 3, 256, dtype=torch.bfloat16)
    ep = torch.export.export(model, (x,))
    calls = [n for n in ep.graph.nodes if n.op == "call_function" and n.target == torch.ops.lowbit.w4a8_linear.default]
    assert len(calls) == 2 and all(len(n.args) == 7 for n in calls)  # the multipliers travel with the call
    out = run_exported_in_fresh_process(ep, (x,), tmp_path)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)


_BAD_MULT = r"weight_group_mult: expected multipliers in \[0, 16\]"
_BAD_SCALE = "weight_scale: expected weight_channel_scale"


@pytest.mark.parametrize(
    "corrupt, match",
    [(lambda sd: sd["0.weight_group_mult"].view(-1)[3].fill_(17), _BAD_MULT),
     (lambda sd: sd["0.weight_group_mult"].view(-1)[3].fill_(-1), _BAD_MULT),
     (lambda sd: sd["0.weight_scale"].view(-1)[5].mul_(1.5), _BAD_SCALE),
     (lambda sd: sd["0.weight_channel_scale"][2].mul_(2), _BAD_SCALE)],
)  # fmt: skip
def test_group_multipliers_state_that_breaks_the_format_is_refused_at_load(corrupt, match):
    """The GEMM multiplies codes by the multipliers in int8 (a multiplier over 16 would wrap) and the decode kernels
    read the float scales: a loaded state must keep both invariants, checked once at load."""
    config = W4A8Config(128, group_multipliers=True)
    sd = quantize_(_mult_model(), config).state_dict()
    corrupt(sd)
    with pytest.raises(ValueError, match=match):
        quantize_(_mult_model(), config).load_state_dict(sd)
