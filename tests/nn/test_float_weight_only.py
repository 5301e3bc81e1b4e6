import pytest
import torch
from torch import nn

from lowbit_flex.nn import (
    FP8WeightOnlyConfig,
    FP8WeightOnlyLinear,
    FPxWeightOnlyConfig,
    FPxWeightOnlyLinear,
    quantize_,
)
from lowbit_flex.quant import E2M1_FN, E2M3_FN, E3M2_FN, E4M3FN, float_quantize
from lowbit_flex.testing import run_exported_in_fresh_process

CONFIGS = [FP8WeightOnlyConfig(), FPxWeightOnlyConfig(3, 2), FPxWeightOnlyConfig(2, 3), FPxWeightOnlyConfig(2, 1)]
_OPS = {FP8WeightOnlyConfig: "fp8_weight_only_linear", FPxWeightOnlyConfig: "fpx_weight_only_linear"}


def _model(dtype=torch.bfloat16):
    return nn.Sequential(nn.Linear(64, 32), nn.GELU(), nn.Linear(32, 16, bias=False)).to(dtype)


def _fmt(config):
    if isinstance(config, FP8WeightOnlyConfig):
        return E4M3FN
    return {(3, 2): E3M2_FN, (2, 3): E2M3_FN, (2, 1): E2M1_FN}[(config.ebits, config.mbits)]


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_quantized_layer_equals_fake_quantized_float64_linear(config):
    linear = _model()[0]
    q = quantize_(nn.Sequential(linear), config)[0]
    assert isinstance(q, FP8WeightOnlyLinear if isinstance(config, FP8WeightOnlyConfig) else FPxWeightOnlyLinear)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    # Independent reference: per-channel scale, fake quantization with float_quantize, float64 matmul.
    w = linear.weight.double()
    fmt = _fmt(config) or (q.__class__ and __import__("lowbit_flex").quant.E2M3_FN)
    scale = (w.float().abs().amax(1) / fmt.max_normal).double()
    wq = float_quantize((w.float() / scale.float()[:, None]), fmt).double() * scale[:, None]
    want = (x.double() @ wq.T + linear.bias.double()).to(torch.bfloat16)
    torch.testing.assert_close(q(x), want, rtol=0, atol=0)
    # The quantization error itself is what the format allows: per-channel relative error of the weight.
    rel = ((wq - w).norm() / w.norm()).item()
    assert rel < {8: 0.04, 6: 0.1, 4: 0.2}[fmt.bits]


def test_any_in_features_quantizes():
    # fp4/fp6 rows are zero-padded to whole 128-code tiles: odd widths quantize too.
    model = nn.Sequential(nn.Linear(64, 8), nn.Linear(8, 6), nn.Linear(6, 4)).to(torch.bfloat16)
    quantize_(model, FPxWeightOnlyConfig(3, 2))
    assert all(isinstance(m, FPxWeightOnlyLinear) for m in model)
    x = torch.randn(2, 64, dtype=torch.bfloat16)
    assert model(x).shape == (2, 4)


def test_skips_float64_layers():
    with pytest.warns(UserWarning, match="weight dtype torch.float64"):  # float32 quantizes (tests/nn/test_casts.py)
        quantize_(nn.Sequential(nn.Linear(8, 8).double()), FP8WeightOnlyConfig())


@pytest.mark.parametrize("ebits, mbits", [(3, 2), (2, 1)])
def test_state_dict_in_the_old_byte_layout_is_converted_on_load(ebits, mbits):
    # A checkpoint from before the tile layout holds pack_fpx bytes: loading converts them exactly.
    from lowbit_flex.quant import pack_fpx, unpack_fpx_tiles

    model = quantize_(_model(), FPxWeightOnlyConfig(ebits, mbits))
    bits = 1 + ebits + mbits
    old = {k: v.clone() for k, v in model.state_dict().items()}
    for name in ("0.weight", "2.weight"):
        k = model.get_submodule(name[0]).in_features
        old[name] = pack_fpx(unpack_fpx_tiles(old[name], bits, k), bits)
    fresh = quantize_(_model(), FPxWeightOnlyConfig(ebits, mbits))
    fresh.load_state_dict(old)
    for name, t in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], t), name
    bad = dict(old, **{"0.weight": old["0.weight"][:, :-3]})
    with pytest.raises(ValueError, match="0.weight: a uint8"):
        fresh.load_state_dict(bad)


@pytest.mark.parametrize("bad", [(4, 3), (3, 3), (2, 2)])
def test_config_validation(bad):
    with pytest.raises(ValueError, match="ebits, mbits: expected one of"):
        FPxWeightOnlyConfig(*bad)


@pytest.mark.parametrize("config", CONFIGS[:2], ids=repr)
def test_state_dict_round_trip(config, tmp_path):
    a, b = quantize_(_model(), config), quantize_(_model(), config)
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    torch.save(a.state_dict(), tmp_path / "sd.pt")
    b.load_state_dict(torch.load(tmp_path / "sd.pt"))
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


@pytest.mark.parametrize("config", CONFIGS[:2], ids=repr)
def test_compile_fullgraph_no_graph_breaks(config):
    model = quantize_(_model(), config)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0 and explained.graph_count == 1
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # the fake impls are traced
    torch.testing.assert_close(compiled(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[3]], ids=repr)
def test_export_save_load_in_a_fresh_process(config, tmp_path):
    model = quantize_(_model(), config)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    ep = torch.export.export(model, (x,))
    op = getattr(torch.ops.lowbit, _OPS[type(config)]).default
    assert [n.target for n in ep.graph.nodes if n.op == "call_function"].count(op) == 2
    out = run_exported_in_fresh_process(ep, (x,), tmp_path)
    torch.testing.assert_close(out, model(x), rtol=0, atol=0)
