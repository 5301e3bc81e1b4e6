"""fp8_flex_attention on CPU runs its documented emulation (FlexAttention's CPU backend takes no fp8): the quantized
values upcast exactly to float32, the output rounded to e4m3 as on the GPU. The real fp8 FlexAttention kernel is
checked against float64 by benchmarks/bench_fp8_attention.py on the GPU."""

import math

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import lowbit_flex.attention.fp8_flex as fp8_flex
from lowbit_flex import quantize_fp8
from lowbit_flex.attention import fp8_flex_attention
from lowbit_flex.quant import dequantize
from lowbit_flex.testing import assert_rel_error

B, H, L, D = 1, 4, 256, 64


@pytest.fixture(scope="module", autouse=True)
def counted_flex():
    """Route fp8_flex_attention's compiled FlexAttention through a compile counter (one per test module)."""
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(flex_attention, backend=counter, dynamic=False)
    mp = pytest.MonkeyPatch()
    mp.setattr(fp8_flex, "_compiled_flex", lambda: compiled)
    yield counter
    mp.undo()


def _softcap(s, b, h, q_idx, kv_idx):
    return 2.0 * torch.tanh(s / 2.0)


def _attention_f64(q, k, v, causal, softcap):
    g = q.shape[1] // k.shape[1]
    s = q.double() @ k.double().repeat_interleave(g, 1).transpose(-1, -2) / math.sqrt(D)
    if softcap:
        s = 2.0 * torch.tanh(s / 2.0)
    if causal:
        s = s.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), -math.inf)
    return torch.softmax(s, -1) @ v.double().repeat_interleave(g, 1)


def _emulation_f64(q, k, v, granularity, causal, softcap):
    """The emulated path written out: dequantized q/k in float64, attention, output rounded to e4m3, v descale."""
    q8, qs = quantize_fp8(q, granularity, 128)
    k8, ks = quantize_fp8(k, granularity, 128)
    v8, vs = quantize_fp8(v, "tensor" if granularity == "tensor" else "head")
    qd = dequantize(q8, qs, granularity, 128, dtype=torch.float64)
    kd = dequantize(k8, ks, granularity, 128, dtype=torch.float64)
    o8 = _attention_f64(qd, kd, v8.double(), causal, softcap).float().to(torch.float8_e4m3fn).double()
    g = q.shape[1] // k.shape[1]
    return o8 * (vs.double() if vs.dim() == 0 else vs.double().repeat_interleave(g, 1)[:, :, None, None])


# fp8 q/k/v plus FlexAttention's fp8 output store: measured 4.5-8.4e-2 vs exact attention on fresh randn draws at
# this size (docs/fp8_attention.md); a wrong scale anywhere gives errors of order 1.
FP8_FLEX_TOL = 1e-1


@pytest.mark.parametrize("granularity, Hkv, causal, softcap", [("tensor", 4, False, False), ("block", 2, True, True)])
def test_emulated_path_matches_its_definition_and_accuracy(granularity, Hkv, causal, softcap):
    q, k, v = torch.randn(B, H, L, D), torch.randn(B, Hkv, L, D), torch.randn(B, Hkv, L, D)
    mask = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, L, L, device="cpu") if causal else None
    mod = _softcap if softcap else None  # a user score_mod must see true-unit scores (after the descale)
    out = fp8_flex_attention(q, k, v, mod, mask, granularity=granularity, enable_gqa=Hkv != H)
    assert out.dtype == q.dtype and out.shape == q.shape
    # Against its own definition: float32 vs float64 flips an occasional e4m3 output rounding (one ulp, 2**-3).
    assert_rel_error(out, _emulation_f64(q, k, v, granularity, causal, softcap), 5e-3)
    assert_rel_error(out, _attention_f64(q, k, v, causal, softcap), FP8_FLEX_TOL)


def test_no_recompile_across_ten_scale_values(counted_flex):
    q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
    fp8_flex_attention(q, k, v)  # compile (or reuse) for this shape
    before = counter_frames = counted_flex.frame_count
    for i in range(10):
        m = 0.3 + 0.4 * i  # new amax, so new q/k/v scale values every call
        out = fp8_flex_attention(q * m, k * (1.0 - 0.04 * i), v * m)
        assert_rel_error(out, _emulation_f64(q * m, k * (1.0 - 0.04 * i), v * m, "tensor", False, False), 5e-3)
    assert counted_flex.frame_count == counter_frames == before, "fp8_flex_attention recompiled for new scales"


def test_bad_input():
    q = torch.randn(B, H, L, D)
    with pytest.raises(ValueError, match="granularity"):
        fp8_flex_attention(q, q, q, granularity="row")
    with pytest.raises(ValueError, match="k: expected a number of heads dividing"):
        fp8_flex_attention(q, torch.randn(B, 3, L, D), torch.randn(B, 3, L, D))
    with pytest.raises(ValueError, match=r"v: expected a \(B, H, L, D\)"):
        fp8_flex_attention(q, q, q[0])
