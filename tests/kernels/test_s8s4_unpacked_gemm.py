"""The large-M W4A8 GEMM that unpacks the weight first (``lowbit_flex.kernels.s8s4_unpacked_gemm``) against an exact
float64 definition, and its unpack pass against ``lowbit_flex.quant.unpack_int4``."""

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.quant import pack_int4, unpack_int4
from lowbit_flex.testing import assert_fully_written, kernel_device, poison_
from tests.kernels._w4a8_exact import assert_close_to_exact, exact_f64, random_inputs

DEVICE = kernel_device()
if DEVICE is None:
    pytest.skip("no GPU and TRITON_INTERPRET unset: Triton kernels cannot run", allow_module_level=True)

from lowbit_flex.kernels import s8s4_unpacked_gemm as mod  # noqa: E402  (imports Triton: after the skip)

# Every config, on the real tiles: ragged M and N (wrapped rows and columns), M above one row tile, groups of 32 to
# 256 (K blocks of 32 to 128) and of 96 (32-wide blocks inside a non-power-of-two group), fp16 and bf16 out, scales
# spanning 1e-6..1e3 (bf16) from random_inputs.
CASES = [
    # name,                   M,   N,   K,   group, bias,  out_dtype
    ("s8s8_64x128x128_w4_s3", 1, 5, 128, 32, True, torch.bfloat16),
    ("s8s8_64x128x128_w4_s3", 2, 40, 256, 64, False, torch.float16),
    ("s8s8_64x128x128_w4_s3", 3, 130, 512, 128, True, torch.bfloat16),
    ("s8s8_64x128x128_w4_s3", 7, 24, 768, 256, True, torch.bfloat16),
    ("s8s8_64x128x128_w4_s3", 17, 33, 192, 96, False, torch.bfloat16),
    ("s8s8_64x128x128_w4_s3", 77, 9, 256, None, True, torch.float16),
    ("s8s8_128x128x128_w8_s3", 16, 40, 256, None, True, torch.bfloat16),
    ("s8s8_128x128x128_w8_s3", 33, 136, 384, None, False, torch.float16),
    ("s8s8_128x128x128_w8_s3", 130, 24, 128, 128, True, torch.bfloat16),
    ("s8s8_64x128x128_w4", 65, 9, 256, 32, True, torch.float16),
    ("s8s8_64x64x128_w4", 66, 70, 256, 64, True, torch.bfloat16),
    ("s8s8_64x64x128_w4", 4096, 24, 128, None, True, torch.bfloat16),
]  # fmt: skip


@pytest.fixture
def poisoned(monkeypatch):
    """Every buffer the launcher allocates (the unpacked weight and the output) starts as NaN / a bit pattern that
    the checks below would catch if any element were left unwritten."""
    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))


@pytest.mark.parametrize("name, M, N, K, group, bias, out_dtype", CASES)
def test_every_config(poisoned, name, M, N, K, group, bias, out_dtype):
    x, xs, q, ws, b = random_inputs(M, N, K, group, out_dtype, bias)
    dev = lambda t: None if t is None else t.to(DEVICE)
    out = mod.s8s4_unpacked_gemm_triton(
        dev(x), dev(xs), pack_int4(q).to(DEVICE), dev(ws), dev(b), out_dtype, mod.UNPACKED_CONFIGS[name]
    )
    assert out.shape == (M, N) and out.dtype == out_dtype
    assert_fully_written(out)
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    # Float32 roundings: the two scale products and the bias; group-wise, one product and one add per K block
    # (blocks of at least 32 values).
    fp32_terms = 3 + (2 * K // 32 if group is not None else 0)
    assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms)


def test_extremes_are_exact_in_int32():
    # Every product at its largest magnitude: each K block's int32 dot and the per-channel total stay exact.
    K, N = 1024, 24
    x = torch.full((3, K), -128, dtype=torch.int8)
    x[1] = 127
    q = torch.full((N, K), -8, dtype=torch.int8)
    q[::2] = 7
    xs, ws = torch.full((3,), 1e-4), torch.full((N, K // 128), 1e-3)
    for w_scale in (ws, ws[:, 0].contiguous()):
        out = mod.s8s4_unpacked_gemm_triton(
            x.to(DEVICE), xs.to(DEVICE), pack_int4(q).to(DEVICE), w_scale.to(DEVICE), None, torch.float16,
            mod.UNPACKED_CONFIGS["s8s8_64x128x128_w4_s3"],
        )  # fmt: skip
        exact, magnitude = exact_f64(x, xs, q, w_scale, None)
        assert_close_to_exact(out, exact, magnitude, torch.float16, 3 + 2 * K // 32)


@pytest.mark.parametrize("N, K", [(1, 8), (37, 2408), (3, 16384 + 64)])
def test_unpack_matches_reference(poisoned, N, K):
    # Word counts that are not a multiple of the program's block, and several programs.
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    q.view(-1)[:2] = torch.tensor([-8, 7], dtype=torch.int8)
    out = mod.unpack_int4_triton(pack_int4(q).to(DEVICE))
    assert out.dtype == torch.int8 and out.shape == (N, K)
    torch.testing.assert_close(out.cpu(), q, rtol=0, atol=0)


def test_unpack_takes_a_view_not_word_aligned():
    packed = pack_int4(torch.randint(-8, 8, (5, 72), dtype=torch.int8)).view(-1)
    view = packed[2 : 2 + 4 * 36].view(4, 36)  # starts 2 bytes into the buffer: no int32 view of it in place
    assert view.storage_offset() % 4
    torch.testing.assert_close(mod.unpack_int4_triton(view.to(DEVICE)).cpu(), unpack_int4(view), rtol=0, atol=0)


def test_op_dispatch_reaches_the_kernel_exactly():
    """Through the op's CUDA entry with the backend forced, as the table picks it for M > 128."""
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

    M, N, K = 130, 40, 256
    x, xs, q, ws, b = random_inputs(M, N, K, 64, torch.bfloat16)
    out = s8s4_linear_cuda(
        x.to(DEVICE), xs.to(DEVICE), pack_int4(q).to(DEVICE), ws.to(DEVICE), b.to(DEVICE), torch.bfloat16,
        _backend="triton_unpacked",
    )  # fmt: skip
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out, exact, magnitude, torch.bfloat16, 3 + 2 * K // 32)


def _random_mult(groups, N):
    """Integer group multipliers over the format's range [0, 16], both extremes present, (groups, N) as ops take
    them."""
    mult = torch.randint(0, 17, (groups, N), dtype=torch.int8)
    if mult.numel() >= 2:
        mult.view(-1)[torch.randperm(groups * N)[:2]] = torch.tensor([0, 16], dtype=torch.int8)
    return mult


@pytest.mark.parametrize("N, K, group", [(1, 32, 32), (37, 2048, 64), (3, 16384 + 128, 128), (24, 768, 256)])
def test_unpack_mult_matches_reference(poisoned, N, K, group):
    """code * mult, exact in int8 (the extremes -8 * 16 = -128 and 7 * 16 = 112 included), over several programs."""
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    mult = _random_mult(K // group, N)
    q[0, :2], mult[0, 0] = torch.tensor([-8, 7], dtype=torch.int8), 16
    out = mod.unpack_int4_triton(pack_int4(q).to(DEVICE), mult.to(DEVICE))
    assert out.dtype == torch.int8 and out.shape == (N, K)
    want = q.long() * mult.t().long().repeat_interleave(group, dim=1)
    assert want.min() == -128 and torch.equal(out.cpu().long(), want)


# (name, M, N, K, group, bias, out_dtype): ragged M / N, groups 32-256, the table's config and a 4-warp one
MULT_CASES = [
    ("s8s8_128x128x128_w8_s3", 130, 24, 512, 128, True, torch.bfloat16),
    ("s8s8_128x128x128_w8_s3", 3, 40, 256, 32, False, torch.float16),
    ("s8s8_64x128x128_w4_s3", 77, 136, 768, 256, True, torch.bfloat16),
]  # fmt: skip


@pytest.mark.parametrize("name, M, N, K, group, bias, out_dtype", MULT_CASES)
def test_group_multipliers_on_the_per_channel_main_loop(poisoned, name, M, N, K, group, bias, out_dtype):
    x, xs, q, channel, b = random_inputs(M, N, K, None, out_dtype, bias)
    mult = _random_mult(K // group, N)
    dev = lambda t: None if t is None else t.to(DEVICE)
    out = mod.s8s4_unpacked_gemm_triton(
        dev(x), dev(xs), pack_int4(q).to(DEVICE), dev(channel), dev(b), out_dtype, mod.UNPACKED_CONFIGS[name],
        w_group_mult=dev(mult),
    )  # fmt: skip
    assert_fully_written(out)
    exact, magnitude = exact_f64(x, xs, q, channel.double()[:, None] * mult.t().double(), b)
    # Float32 roundings: the int32 sum to float, the two scale products and the bias.
    assert_close_to_exact(out, exact, magnitude, out_dtype, 4)


def test_op_with_multipliers_dispatches_to_them_exactly(monkeypatch):
    """The op given the multipliers takes the multiplying unpack from M = 129 (a Hopper's table where the CUTLASS
    library is unavailable: with it, the CUTLASS multiplier rows come first), with the result of the float group
    scales; forced without them, that backend refuses."""
    from lowbit_flex.kernels import s8s4_cutlass, s8s4_dispatch
    from lowbit_flex.kernels.s8s4_dispatch import Arch, Backend, choose, s8s4_linear_cuda

    monkeypatch.setattr(s8s4_dispatch, "arch_of", lambda device: Arch.SM90)
    monkeypatch.setattr(s8s4_cutlass, "library_available", lambda: False)
    choose.cache_clear()
    M, N, K, group = 130, 48, 512, 128
    x, xs, q, _, b = random_inputs(M, N, K, None, torch.bfloat16)
    # channel scales of 11 significant bits over 15 octaves: their products with 5-bit multipliers are exact floats
    channel = torch.ldexp(1 + torch.randint(0, 2**10, (N,)) / 2**10, torch.randint(-10, 5, (N,)))
    mult = _random_mult(K // group, N)
    ws = (channel.double()[:, None] * mult.t().double()).float().contiguous()
    assert torch.equal(ws.double(), channel.double()[:, None] * mult.t().double())
    rule = s8s4_dispatch.rule_for(torch.device(DEVICE), ws, M, N, K, has_mult=True)
    assert rule.backend is Backend.TRITON_UNPACKED_MULT
    args = [t.to(DEVICE) for t in (x, xs, pack_int4(q), ws, b)]
    out = s8s4_linear_cuda(*args, torch.bfloat16, mult.to(DEVICE), channel.to(DEVICE))
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out, exact, magnitude, torch.bfloat16, 4)
    with pytest.raises(ValueError, match="_backend: triton_unpacked_mult cannot take"):
        s8s4_linear_cuda(*args, torch.bfloat16, _backend="triton_unpacked_mult")
    choose.cache_clear()
