"""Property tests of float_quantize over random formats (hypothesis is a dev dependency; the GPU machine lacks it)."""

import pytest
import torch

from lowbit_flex.quant import FPxFormat, Specials, float_quantize
from tests.quant._fpx_reference import assert_same_bits

hypothesis = pytest.importorskip("hypothesis")
given, settings, st = hypothesis.given, hypothesis.settings, hypothesis.strategies

_formats = st.builds(
    lambda e, m, s: FPxFormat(e, min(m, 15 - e), specials=s if (e > 1 or s is Specials.NONE) else Specials.NONE),
    st.integers(1, 8), st.integers(0, 10), st.sampled_from(list(Specials)),
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(_formats, st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=64))
def test_idempotent_and_monotone(fmt, values):
    x = torch.tensor(sorted(values), dtype=torch.float32)
    q = float_quantize(x, fmt)
    assert_same_bits(float_quantize(q, fmt), q, x)
    assert bool((q[1:] >= q[:-1]).all())
