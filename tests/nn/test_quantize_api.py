import dataclasses

import pytest
import torch
from torch import nn

from lowbit_flex.nn import SkipLayer, quantize_, register_quantize_handler


@dataclasses.dataclass
class _HalveConfig:  # a toy config: replaces each Linear by one whose weight is halved, skips odd in_features
    pass


@register_quantize_handler(_HalveConfig)
def _halve(linear: nn.Linear, config: _HalveConfig) -> nn.Module:
    if linear.in_features % 2:
        raise SkipLayer(f"in_features={linear.in_features} is odd")
    new = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    new.weight.data = linear.weight.data / 2
    new.bias = linear.bias
    return new


def test_quantize_replaces_filters_and_warns_on_skips():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 3), nn.Linear(3, 2)))
    w0 = model[0].weight.detach().clone()
    with pytest.warns(UserWarning, match=r"kept 1 layer\(s\) unquantized: 2\.1 \(in_features=3 is odd\)"):
        out = quantize_(model, _HalveConfig(), filter_fn=lambda m, fqn: fqn != "2.0")
    assert out is model
    torch.testing.assert_close(model[0].weight, w0 / 2)
    assert model[2][0].weight.abs().sum() > 0 and isinstance(model[2][1], nn.Linear)


def test_bad_arguments():
    with pytest.raises(TypeError, match="config: expected one of"):
        quantize_(nn.Linear(2, 2), object())
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        quantize_("model", _HalveConfig())
    with pytest.raises(ValueError, match="already registered"):
        register_quantize_handler(_HalveConfig)(_halve)


# --- the shipped configs on real model structures -------------------------------------------------------------------
def _configs():
    from lowbit_flex.nn import FP8WeightOnlyConfig, FPxWeightOnlyConfig, W4A8Config

    # (config, the relative L2 error allowed at a TransformerEncoderLayer's output against the float layer): about
    # 3x what each format measured there with random weights (W4A8 0.021, fp8 0.009, fp6 0.016, fp4 0.034); the
    # residual and LayerNorm shrink the per-layer weight error (0.12-0.16 for int4).
    return [
        (W4A8Config(), 0.06),
        (W4A8Config(group_size=32), 0.06),
        (FP8WeightOnlyConfig(), 0.03),
        (FPxWeightOnlyConfig(3, 2), 0.05),
        (FPxWeightOnlyConfig(2, 1), 0.1),
    ]


def _rel_err(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("config, tol", _configs())
def test_transformer_encoder_layer_keeps_attention_out_proj(config, tol):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, 4, dim_feedforward=128, batch_first=True, dtype=torch.bfloat16).eval()
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = layer(x)
        with pytest.warns(UserWarning, match=r"self_attn\.out_proj \(nn\.MultiheadAttention's out_proj"):
            quantize_(layer, config)
        out = layer(x)  # MultiheadAttention reads out_proj.weight itself: it must still be the float Linear
    assert type(layer.self_attn.out_proj).__name__ == "NonDynamicallyQuantizableLinear"
    quantize_(layer, config)  # again: nothing left to quantize, and still one fast-path hook
    assert len(layer._forward_pre_hooks) == 1
    assert type(layer.linear1) is not nn.Linear and type(layer.linear2) is not nn.Linear
    assert _rel_err(out, ref) < tol


@pytest.mark.parametrize("config, tol", _configs())
def test_meta_model_restores_a_quantized_checkpoint(config, tol):
    def block():
        return nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 64, bias=False)).to(torch.bfloat16)

    torch.manual_seed(0)
    model = quantize_(block(), config)
    state = model.state_dict()
    with torch.device("meta"):
        empty = block()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is skipped for being on the meta device
        quantize_(empty, config)
    assert all(t.is_meta for t in empty.state_dict().values())
    empty.load_state_dict(state, assign=True)
    for key, t in empty.state_dict().items():
        assert t.dtype == state[key].dtype and torch.equal(t.view(torch.uint8), state[key].view(torch.uint8)), key
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(empty(x), model(x), rtol=0, atol=0)


def test_device_moves_each_layer_before_quantizing():
    from lowbit_flex.nn import W4A8Config, W4A8Linear

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 64))
    quantize_(model, W4A8Config(), device=device)
    assert all(isinstance(m, W4A8Linear) and m.weight.device.type == device for m in model)


def test_progress_is_shown_for_slow_runs(monkeypatch, caplog):
    from lowbit_flex.nn import quantize_api

    monkeypatch.setattr(quantize_api, "_PROGRESS_AFTER_S", 0.0)
    monkeypatch.setattr(quantize_api, "_tqdm", lambda: None)  # no tqdm: log lines
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(20)])
    with caplog.at_level("INFO", logger="lowbit_flex"):
        quantize_(model, _HalveConfig())
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1] == "quantize_: 20/20 layers (19)" and len(lines) == 10  # every tenth of the layers

    updates = []

    class Bar:  # tqdm's interface as quantize_ uses it
        def __init__(self, total, initial, **kw):
            updates.append((total, initial))

        def update(self, n):
            updates.append(n)

        def close(self):
            updates.append("closed")

    monkeypatch.setattr(quantize_api, "_tqdm", lambda: Bar)
    quantize_(nn.Sequential(*[nn.Linear(4, 4) for _ in range(3)]), _HalveConfig())
    assert updates == [(3, 1), 1, 1, "closed"]
