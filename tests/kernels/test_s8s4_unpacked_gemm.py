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
