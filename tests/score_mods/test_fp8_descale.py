import math

import pytest
import torch
from attn_gym.mods import generate_alibi_bias
from torch._dynamo.testing import CompileCounterWithBackend
from torch.nn.attention.flex_attention import flex_attention

from lowbit_flex.score_mods import compose, fp8_descale

B, H, L, D = 1, 2, 128, 16


def _attention_f64(q, k, v, bias=None):
    s = q.double() @ k.double().transpose(-1, -2) / math.sqrt(D)
    if bias is not None:
        s = s + bias
    return torch.softmax(s, dim=-1) @ v.double()


def _scales(kind: str, seed_shift: float = 0.0):
    shape = {"tensor": (), "head": (H,), "batch_head": (B, H), "token": (B, H, L)}[kind]
    return torch.rand(shape) + 0.5 + seed_shift


def _expand(s: torch.Tensor, for_q: bool) -> torch.Tensor:
    """A scale as a (B, H, L, 1) or (B, H, 1, L) float64 factor on q·kᵀ."""
    s = s.double()
    if s.dim() == 0:
        return s
    if s.dim() == 1:
        return s[None, :, None, None]
    if s.dim() == 2:
        return s[:, :, None, None]
    return s[..., :, None] if for_q else s[..., None, :]


@pytest.fixture(scope="module")
def counted_flex():
    """flex_attention compiled once for the module with a counting backend (CPU: dynamic=False)."""
    counter = CompileCounterWithBackend("inductor")
    return torch.compile(flex_attention, backend=counter, dynamic=False), counter


@pytest.mark.parametrize("q_kind, k_kind", [("tensor", "token"), ("head", "batch_head"), ("token", "head")])
def test_descale_matches_scaled_scores(q_kind, k_kind):
    flex = flex_attention  # eager (the same score_mod semantics, no compile: the compiled path is tested below)
    q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
    qs, ks = _scales(q_kind), _scales(k_kind)
    mod = fp8_descale(qs, ks)
    assert mod.__name__ == f"fp8_descale_q{q_kind}_k{k_kind}"
    out = flex(q, k, v, score_mod=mod)
    bias_free = _attention_f64(q, k, v, None)
    s = (q.double() @ k.double().transpose(-1, -2)) * _expand(qs, True) * _expand(ks, False) / math.sqrt(D)
    ref = torch.softmax(s, dim=-1) @ v.double()
    torch.testing.assert_close(out.double(), ref, rtol=2e-5, atol=2e-5)
    assert not torch.allclose(out.double(), bias_free, atol=1e-3)  # the descale did something


def test_no_recompile_across_ten_scale_values(counted_flex):
    """The scales are graph inputs, not constants: new values reuse the compiled kernel (no .item(), no guard)."""
    flex, counter = counted_flex
    q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
    flex(q, k, v, score_mod=fp8_descale(_scales("tensor"), _scales("tensor")))  # compiled (maybe already)
    before = counter.frame_count
    outs = []
    for i in range(10):
        qs, ks = torch.tensor(0.5 + 0.1 * i), torch.tensor(1.5 - 0.07 * i)
        outs.append(flex(q, k, v, score_mod=fp8_descale(qs, ks)))  # a fresh closure each call, as in a model
        s = q.double() @ k.double().transpose(-1, -2) * (qs.double() * ks.double()) / math.sqrt(D)
        torch.testing.assert_close(outs[-1].double(), torch.softmax(s, -1) @ v.double(), rtol=2e-5, atol=2e-5)
    assert counter.frame_count == before, f"{counter.frame_count - before} recompiles for new scale values"


def test_bad_scales():
    with pytest.raises(TypeError, match="q_scale: expected a torch.Tensor"):
        fp8_descale(0.5, torch.tensor(1.0))
    with pytest.raises(ValueError, match="k_scale: expected shape"):
        fp8_descale(torch.tensor(1.0), torch.ones(1, 2, 3, 4))
    with pytest.raises(TypeError, match="k_scale: expected a floating-point tensor"):
        fp8_descale(torch.tensor(1.0), torch.ones(2, dtype=torch.int32))


def test_compose_order_name_and_attn_gym(counted_flex):
    flex, _ = counted_flex
    q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
    qs, ks = torch.tensor(0.7), torch.tensor(1.3)
    alibi = generate_alibi_bias(H)
    mod = compose(fp8_descale(qs, ks), alibi)
    assert mod.__name__ == f"compose(fp8_descale_qtensor_ktensor, {alibi.__name__})"
    out = flex(q, k, v, score_mod=mod)
    # alibi adds a bias after the descale: score * qs * ks + bias (composition order matters).
    idx = torch.arange(L, dtype=torch.float64)
    slopes = 2.0 ** (-(torch.arange(H, dtype=torch.float64) + 1) * 8.0 / H)  # ALiBi's geometric slopes
    bias = slopes[None, :, None, None] * (idx[None, :] - idx[:, None])  # (kv_idx - q_idx) * slope
    s = q.double() @ k.double().transpose(-1, -2) * 0.7 * 1.3 / math.sqrt(D) + bias
    torch.testing.assert_close(out.double(), torch.softmax(s, -1) @ v.double(), rtol=2e-5, atol=2e-5)


def test_compose_eager_semantics():
    add1 = lambda s, b, h, qi, ki: s + 1
    dbl = lambda s, b, h, qi, ki: s * 2
    z = torch.tensor(3.0)
    assert compose(add1, dbl)(z, 0, 0, 0, 0).item() == 8.0
    assert compose(dbl, add1)(z, 0, 0, 0, 0).item() == 7.0
    assert compose(dbl) is dbl
    with pytest.raises(ValueError, match="at least one"):
        compose()
    with pytest.raises(TypeError, match=r"score_mods\[1\]"):
        compose(dbl, 3)
