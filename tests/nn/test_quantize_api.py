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
