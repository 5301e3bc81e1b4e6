import pytest
import torch
import torch.nn.functional as F

from lowbit_flex.attention import lowbit_attention
from lowbit_flex.testing import assert_rel_error


def _ref(q, k, v, causal):
    g = q.shape[1] // k.shape[1]
    return F.scaled_dot_product_attention(
        q.double(), k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1), is_causal=causal
    )


@pytest.mark.parametrize("dtype, tol", [("fp8", 6.5e-2), ("int8", 4.5e-2)])  # measured format accuracy, randn
def test_entry_point_quantizes_and_matches_float64(dtype, tol):
    q = torch.randn(1, 4, 200, 64, dtype=torch.bfloat16)
    k, v = torch.randn(2, 1, 2, 300, 64, dtype=torch.bfloat16).unbind(0)
    out = lowbit_attention(q, k, v, dtype, causal=True)
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    assert_rel_error(out, _ref(q, k, v, True), tol)


def test_unsupported_head_dim_falls_back_to_sdpa():
    q, k, v = torch.randn(3, 1, 2, 50, 96).unbind(0)  # D = 96: not a kernel head dim
    out = lowbit_attention(q, k, v, "fp8")
    assert_rel_error(out, _ref(q, k, v, False), 1e-5)  # float32 SDPA, no quantization


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((torch.randn(1, 2, 8, 64),) * 3, {"dtype": "fp4"}, ValueError, "dtype: expected one of"),
    ((torch.randn(1, 2, 8, 64), torch.randn(1, 2, 8, 64).half(), torch.randn(1, 2, 8, 64)), {}, TypeError,
     "k: expected dtype float32"),
    ((torch.randn(1, 2, 8, 64), torch.randn(1, 3, 8, 64), torch.randn(1, 3, 8, 64)), {}, ValueError,
     "k: expected shape"),
    ((torch.randn(1, 2, 8, 64), torch.randn(1, 2, 8, 64), torch.randn(1, 2, 9, 64)), {}, ValueError,
     "v: expected shape"),
])  # fmt: skip
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lowbit_attention(*args, **kwargs)
