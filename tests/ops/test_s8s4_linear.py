import os
import subprocess
import sys

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import assert_fully_written, assert_raises_eager_and_fake, kernel_device, poison_

OP = torch.ops.lowbit.s8s4_linear


def _inputs(lead, N, K, groups=None, device="cpu", scale_range=(-2.0, 2.0)):
    """Fresh random int8 activations and int4 weights (both extremes present), scales spanning a log range."""
    x = torch.randint(-128, 128, (*lead, K), dtype=torch.int8)
    x.view(-1)[:2] = torch.tensor([-128, 127], dtype=torch.int8)
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    q.view(-1)[:2] = torch.tensor([-8, 7], dtype=torch.int8)
    lo, hi = scale_range
    xs = 10 ** (torch.rand(lead) * (hi - lo) + lo)
    ws_shape = (N,) if groups is None else (N, groups)
    ws = 10 ** (torch.rand(ws_shape) * (hi - lo) + lo)
    bias = torch.randn(N) * 100
    to = lambda t: t.to(device)
    return to(x), to(xs), to(pack_int4(q)), to(ws), to(bias), q


def _exact_f64(x, xs, q, ws, bias):
    """Independent definition: float64 products of integers are exact (|dot| < 2**53); scales in another order."""
    K, N = x.shape[-1], q.shape[0]
    groups = 1 if ws.dim() == 1 else ws.shape[1]
    g = K // groups
    xg = x.double().reshape(-1, groups, g)
    qg = q.double().reshape(N, groups, g)
    dots = torch.einsum("mgk,ngk->mng", xg, qg)  # exact integers
    scales = xs.double().reshape(-1, 1, 1) * ws.double().reshape(1, N, groups)
    out = (dots * scales).sum(-1)
    if bias is not None:
        out = out + bias.double()
    return out.reshape(*x.shape[:-1], N), (dots.abs() * scales).sum(-1)


def _assert_close_to_exact(out, exact, magnitude, dtype, fp32_terms=0):
    """``out`` within one ulp of ``dtype`` of the exact value, plus ``fp32_terms`` float32 roundings of the summed
    magnitudes (for kernels that scale in float32)."""
    finfo = torch.finfo(dtype)
    bound = exact.abs() * finfo.eps + finfo.tiny + fp32_terms * 2.0**-24 * magnitude.reshape(exact.shape)
    err = (out.double().cpu() - exact).abs()
    assert bool((err <= bound).all()), f"max error {float((err - bound).max()):.3g} over the bound"


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("lead, N, K, groups", [
    ((1,), 5, 32, None),        # M = 1
    ((7,), 9, 96, None),        # odd M, odd N
    ((2, 3), 4, 64, 2),         # 3-D input, group-wise (group 32)
    ((3,), 6, 4096, None),      # large K
    ((3,), 6, 4096, 32),        # large K, group 128
])  # fmt: skip
def test_reference_is_correctly_rounded(lead, N, K, groups, out_dtype):
    # fp16 tops out at 65504: keep its products in range; bf16 takes scales over four decades.
    scale_range = (-2.0, 2.0) if out_dtype == torch.bfloat16 else (-3.0, -1.0)
    x, xs, w, ws, bias, q = _inputs(lead, N, K, groups, scale_range=scale_range)
    out = OP(x, xs, w, ws, bias, out_dtype)
    assert out.shape == (*lead, N) and out.dtype == out_dtype
    exact, _ = _exact_f64(x, xs, q, ws, bias)
    # The reference rounds once to out_dtype: within half an ulp (eps / 2 relative) of the exact value.
    finfo = torch.finfo(out_dtype)
    err = (out.double() - exact).abs()
    assert bool((err <= exact.abs() * finfo.eps / 2 * (1 + 1e-9) + finfo.tiny).all())


def test_extremes_and_defaults():
    K = 2048
    x = torch.full((2, K), -128, dtype=torch.int8)
    w = pack_int4(torch.full((3, K), -8, dtype=torch.int8))
    xs = torch.tensor([1e-30, 1e30]).reshape(2, 1)  # (M, 1) scales, extreme range
    ws = torch.tensor([1e-8, 1.0, 1e8])
    out = OP(x, xs, w, ws)  # no bias, out_dtype None -> bfloat16
    assert out.dtype == torch.bfloat16
    exact = 1024.0 * K * xs.double() * ws.double()  # (-128) * (-8) summed over K
    torch.testing.assert_close(out.double(), exact.to(torch.bfloat16).double(), rtol=0, atol=0)


def test_unit_group_scale_is_per_channel():
    x, xs, w, ws, bias, _ = _inputs((4,), 8, 64)
    torch.testing.assert_close(OP(x, xs, w, ws, bias), OP(x, xs, w, ws[:, None].contiguous(), bias), rtol=0, atol=0)


def _bad_cases():
    x, xs, w, ws, b = torch.zeros(4, 64, dtype=torch.int8), torch.ones(4), torch.zeros(8, 32, dtype=torch.int8), \
        torch.ones(8), torch.zeros(8)  # fmt: skip
    ok = dict(input=x, input_scale=xs, weight=w, weight_scale=ws, bias=b)
    cases = [
        (dict(input=x.float()), TypeError, "input: expected dtype int8"),
        (dict(weight=w.float()), TypeError, "weight: expected dtype int8"),
        (dict(input_scale=xs.long()), TypeError, "input_scale: expected dtype"),
        (dict(weight_scale=ws.to(torch.int8)), TypeError, "weight_scale: expected dtype"),
        (dict(bias=b.long()), TypeError, "bias: expected dtype"),
        (dict(input=torch.zeros(4, 48, dtype=torch.int8)), ValueError, "input: expected the last dimension K"),
        (dict(weight=torch.zeros(8, 31, dtype=torch.int8)), ValueError, r"weight: expected shape \(N, K // 2\)"),
        (dict(weight=torch.zeros(8, 32, 1, dtype=torch.int8)), ValueError, "weight: expected 2 dimensions"),
        (dict(input_scale=torch.ones(5)), ValueError, "input_scale: expected shape"),
        (dict(input_scale=torch.ones(4, 2)), ValueError, "input_scale: expected shape"),
        (dict(weight_scale=torch.ones(7)), ValueError, "weight_scale: expected shape"),
        (dict(weight_scale=torch.ones(8, 3)), ValueError, "weight_scale: expected shape"),  # 64 % 3
        (dict(weight_scale=torch.ones(8, 4)), ValueError, "weight_scale: expected shape"),  # group 16 < 32
        (dict(weight_scale=torch.ones(8, 1, 1)), ValueError, "weight_scale: expected 1 or 2 dimensions"),
        (dict(bias=torch.zeros(9)), ValueError, "bias: expected shape"),
        (dict(input=torch.zeros(64, 4, dtype=torch.int8).t()), ValueError, "input: expected a contiguous"),
        (dict(weight=torch.zeros(32, 8, dtype=torch.int8).t()), ValueError, "weight: expected a contiguous"),
        (dict(weight_scale=torch.ones(8, 2)[:, 0]), ValueError, "weight_scale: expected a contiguous"),
        (dict(input=x.to("meta")), ValueError, "input_scale: expected a tensor on meta"),
        (dict(bias=b.to("meta")), ValueError, "bias: expected a tensor on cpu"),
        (dict(out_dtype=torch.float32), TypeError, "out_dtype: expected float16 or bfloat16"),
    ]
    return [({**ok, **change}, exc, match) for change, exc, match in cases]


def _bad_mult_cases():
    """Group scales given also as integer multipliers of a channel scale: (K // group, N) int8 and (N,) float."""
    x, xs, w = torch.zeros(4, 256, dtype=torch.int8), torch.ones(4), torch.zeros(16, 128, dtype=torch.int8)
    ws, mult, channel = torch.ones(16, 2), torch.ones(2, 16, dtype=torch.int8), torch.ones(16)
    ok = dict(input=x, input_scale=xs, weight=w, weight_scale=ws, weight_group_mult=mult, weight_channel_scale=channel)
    cases = [
        (dict(weight_channel_scale=None), ValueError, "weight_group_mult, weight_channel_scale: expected both"),
        (dict(weight_group_mult=None), ValueError, "weight_group_mult, weight_channel_scale: expected both"),
        (dict(weight_scale=torch.ones(16)), ValueError, "weight_group_mult: given with per-channel weight_scale"),
        (dict(weight_group_mult=mult.float()), TypeError, "weight_group_mult: expected dtype int8"),
        (dict(weight_group_mult=mult.t().contiguous()), ValueError, r"weight_group_mult: expected int8 .*\(2, 16\)"),
        (dict(weight_group_mult=torch.ones(4, 16, dtype=torch.int8)), ValueError, "weight_group_mult: expected int8"),
        (dict(weight_group_mult=torch.ones(16, 2, dtype=torch.int8).t()), ValueError,
         "weight_group_mult: expected a contiguous"),
        (dict(weight_channel_scale=torch.ones(16, dtype=torch.int32)), TypeError, "weight_channel_scale: expected"),
        (dict(weight_channel_scale=torch.ones(15)), ValueError, r"weight_channel_scale: expected shape \(16,\)"),
        (dict(weight_channel_scale=torch.ones(16, 1)), ValueError, "weight_channel_scale: expected 1 dimensions"),
        (dict(weight_channel_scale=channel.to("meta")), ValueError, "weight_channel_scale: expected a tensor on cpu"),
    ]  # fmt: skip
    return [({**ok, **change}, exc, match) for change, exc, match in cases]


@pytest.mark.parametrize("kwargs, exc, match", _bad_cases() + _bad_mult_cases())
def test_bad_input_eager_and_fake(kwargs, exc, match):
    assert_raises_eager_and_fake(OP, kwargs, exc, match)


def test_group_multipliers_give_the_same_result_as_their_float_scales():
    """On CPU the op reads weight_scale; the multipliers are the same scales in another form (kernels may read
    either), so passing them changes nothing here."""
    from lowbit_flex.quant import group_mult_scales, quantize_int4_weight_group_mult

    w, x, xs = torch.randn(48, 512), torch.randint(-128, 128, (5, 512), dtype=torch.int8), torch.rand(5) + 0.1
    packed, channel, mult = quantize_int4_weight_group_mult(w, 128, max_mult=16)
    ws = group_mult_scales(channel, mult)
    plain = OP(x, xs, packed, ws)
    assert torch.equal(OP(x, xs, packed, ws, None, None, mult.t().contiguous(), channel), plain)


# --- dispatch table (no GPU needed: the CUTLASS wrapper's device checks and library loader are replaced) ----------
@pytest.fixture
def fake_cutlass(monkeypatch):
    """CUTLASS "supports" every shape with N % 64 == 0; ``load`` is what the test sets. Caches cleared both ways."""
    from lowbit_flex import cuda_build
    from lowbit_flex.kernels import s8s4_cutlass, s8s8_groupwise_cutlass
    from lowbit_flex.kernels.s8s4_dispatch import choose

    monkeypatch.setattr(s8s4_cutlass, "cutlass_s8s4_supported", lambda family, M, N, K: N % 64 == 0)
    monkeypatch.setattr(s8s8_groupwise_cutlass, "supported", lambda M, N, K, group: N % 64 == 0)
    monkeypatch.setattr(cuda_build, "load", lambda: object())
    s8s4_cutlass.library_available.cache_clear()
    choose.cache_clear()
    yield cuda_build
    s8s4_cutlass.library_available.cache_clear()
    choose.cache_clear()


@pytest.mark.parametrize("cutlass", [True, False])
def test_dispatch_for_any_m_takes_only_kernels_right_for_every_m(fake_cutlass, cutlass, monkeypatch):
    """A symbolic M (dynamic batch) walks the table with its example value over the rows whose kernel takes any M:
    never a decode kernel or a split-K tile, at any example size; with a concrete M the decode kernels stay."""
    from lowbit_flex.kernels import s8s4_cutlass
    from lowbit_flex.kernels.s8s4_dispatch import Arch, Backend, ScaleKind, choose, takes_any_m

    if not cutlass:  # the library fails to build: its rows are skipped (after one warning)

        def no_library():
            raise fake_cutlass.CudaBuildError("no library here")

        monkeypatch.setattr(fake_cutlass, "load", no_library)
        with pytest.warns(
            RuntimeWarning, match=r"CUDA library \(CUTLASS W4A8 GEMMs, the decode GEMVs\) is unavailable"
        ):
            assert not s8s4_cutlass.library_available()
    for arch in (Arch.SM80, Arch.SM90, Arch.OTHER):
        for scale, group in ((ScaleKind.PER_CHANNEL, None), (ScaleKind.GROUPWISE, 128)):
            for M in (1, 2, 16, 17, 128, 513, 4096):
                for N, K in ((4096, 4096), (14336, 4096), (4096, 14336)):
                    rule = choose(arch, scale, M, N, K, group, any_m=True)
                    assert takes_any_m(rule.backend, rule.config), (arch, scale, M, N, K, rule)
    assert not takes_any_m(Backend.TRITON_GEMV, "dp4a_4x16x1024")
    assert not takes_any_m(Backend.TRITON_DECODE, "dot_16x64x256")
    assert not takes_any_m(Backend.CUDA_GEMV, "mma_n1k8_pf0")
    assert not takes_any_m(Backend.TRITON, "gemv_16x64x256_splitk") and takes_any_m(Backend.TRITON, "mid_64x128x128")
    decode = Backend.CUDA_GEMV if cutlass else Backend.TRITON_DECODE  # the CUDA GEMV needs the library too
    assert choose(Arch.SM90, ScaleKind.GROUPWISE, 2, 4096, 4096, 128).backend is decode  # concrete M
    choose.cache_clear()


def test_rows_hint_reads_no_guard():
    from lowbit_flex.kernels.arch import rows_hint

    assert rows_hint(7) == (7, False)
    shape_env = torch.fx.experimental.symbolic_shapes.ShapeEnv()
    s = shape_env.create_unbacked_symint()  # no example value: the prefill default
    assert rows_hint(s) == (4096, True)
    assert not shape_env.guards


def test_dispatch_table(fake_cutlass):
    from lowbit_flex.kernels.s8s4_dispatch import Arch, Backend, ScaleKind, choose

    pc, gw = ScaleKind.PER_CHANNEL, ScaleKind.GROUPWISE
    pick = lambda *a: (choose(*a).backend, choose(*a).config)
    assert pick(Arch.SM90, pc, 8192, 4096, 4096) == (Backend.CUTLASS_SM90, "256x128x128_coop")
    assert pick(Arch.SM90, pc, 256, 4096, 4096) == (Backend.CUTLASS_SM90, "128x128x128_coop")
    # Decode sizes, either scale kind. Hopper, M <= 8: the CUDA tensor-core GEMV (at M = 1 quantizing x itself on
    # small and wide layers, after the quantizer as its programmatic dependent on deep and larger square ones), where
    # K % 128 == 0 and groups are 128s (per channel K < 2**17); its config by the layer's shape class (wide N > K,
    # deep K > N, N * K <= 2**25, larger square) and, where they measured apart, the scale kind.
    cuda = Backend.CUDA_GEMV
    assert pick(Arch.SM90, pc, 1, 14336, 4096) == (cuda, "mma_n4k4_pf0")  # wide: N > K
    assert pick(Arch.SM90, gw, 1, 4096, 4096, 128) == (cuda, "mma_n2k4_pf2")  # N * K <= 2**25
    assert pick(Arch.SM90, pc, 1, 4096, 11008) == (cuda, "mma_n1k8_pf0")  # deep: K > N
    assert pick(Arch.SM90, pc, 1, 8192, 8192) == (cuda, "mma_n2k4_pf0")
    assert pick(Arch.SM90, gw, 1, 8192, 8192, 128) == (cuda, "mma_n2k4_pf0")
    assert choose(Arch.SM90, gw, 1, 4096, 4096, 128).fuse_quant  # one launch per layer at M = 1 on small layers
    assert choose(Arch.SM90, pc, 1, 14336, 4096).fuse_quant  # and wide ones
    # Deep and larger square layers at M = 1: quantized first, the GEMV the quantizer's programmatic dependent.
    for scale, group in ((pc, None), (gw, 128)):
        for n, k in ((4096, 11008), (8192, 8192)):
            rule = choose(Arch.SM90, scale, 1, n, k, group)
            assert rule.programmatic and not rule.fuse_quant
    assert not any(choose(Arch.SM90, pc, m, 8192, 8192).programmatic for m in (2, 8, 16))  # measured only at M = 1
    assert pick(Arch.SM90, pc, 4, 14336, 4096) == (cuda, "mma_n2k4_pf0")
    assert pick(Arch.SM90, pc, 4, 4096, 14336) == (cuda, "mma_n2k4_pf2")
    assert pick(Arch.SM90, gw, 4, 4096, 14336, 128) == (cuda, "mma_n2k4_pf0")
    assert pick(Arch.SM90, gw, 8, 4096, 4096, 256) == (cuda, "mma_n2k4_pf2")
    assert not choose(Arch.SM90, pc, 8, 4096, 4096).fuse_quant  # quantized first from M = 2
    # M = 9..16: the CUDA GEMV on N * K <= 2**25, on larger square layers, on deep layers with K split across a
    # cluster of two CTAs (either scale kind), and group-wise on wide layers; per channel on wide layers the Triton
    # tensor-core GEMV (below).
    assert pick(Arch.SM90, pc, 16, 4096, 4096) == (cuda, "mma_n2k4_pf2")
    assert pick(Arch.SM90, gw, 9, 4096, 8192, 128) == (cuda, "mma_n1k8_pf0")
    assert pick(Arch.SM90, pc, 16, 8192, 8192) == (cuda, "mma_n4k2_pf2")
    assert pick(Arch.SM90, gw, 16, 8192, 8192, 128) == (cuda, "mma_n2k4_pf0")
    assert pick(Arch.SM90, gw, 16, 14336, 4096, 128) == (cuda, "mma_n2k4_pf0")
    assert pick(Arch.SM90, gw, 16, 4096, 14336, 128) == (cuda, "mma_n4k2_s2_pf2")  # deep: K > N
    assert pick(Arch.SM90, pc, 9, 4096, 11008) == (cuda, "mma_n4k2_s2_pf2")
    assert pick(Arch.SM90, pc, 16, 14336, 4096) == (Backend.TRITON_DECODE, "dot_16x64x256")
    # What it cannot take, and Ampere (unmeasured there): at M = 1 the dp4a GEMV (quantizing x itself; its 8-row
    # tile for deep layers), up to 16 the Triton tensor-core GEMV after the quantizer.
    assert pick(Arch.SM90, gw, 1, 4096, 4096, 64) == (Backend.TRITON_GEMV, "dp4a_4x16x1024")  # groups of 64
    assert pick(Arch.SM90, pc, 1, 4096, 4160) == (Backend.TRITON_GEMV, "dp4a_4x8x2048")  # K % 128 != 0
    assert pick(Arch.SM80, pc, 1, 14336, 4096) == (Backend.TRITON_GEMV, "dp4a_4x16x1024")
    assert pick(Arch.SM80, gw, 1, 4096, 14336) == (Backend.TRITON_GEMV, "dp4a_4x8x2048")  # K > N
    assert pick(Arch.SM90, pc, 1, 4096, 2**17) == (Backend.TRITON_DECODE, "dot_16x64x256")  # int32 sums: K < 2**17
    assert pick(Arch.SM80, gw, 3, 4096, 4096) == (Backend.TRITON_DECODE, "dot_16x128x256")
    assert pick(Arch.SM80, pc, 3, 4096, 4096) == (Backend.TRITON_DECODE, "dot_16x64x256")
    assert not choose(Arch.SM80, pc, 3, 4096, 4096).fuse_quant
    assert pick(Arch.SM90, pc, 9, 4096, 4160) == (Backend.TRITON_DECODE, "dot_16x64x256")  # M = 9..16, K % 128
    assert pick(Arch.SM80, pc, 16, 4096, 14336) == (Backend.TRITON_DECODE, "dot_16x64x256")
    assert pick(Arch.SM90, gw, 16, 4096, 14336, 64) == (Backend.TRITON_DECODE, "dot_16x128x256")  # groups of 64
    assert pick(Arch.SM90, pc, 17, 14336, 4096) == (Backend.CUTLASS_SM90, "128x128x128_coop")  # wide: N > K
    assert pick(Arch.SM90, pc, 64, 4096, 4096) == (Backend.CUTLASS_SM80, "32x128x128_s4")
    assert pick(Arch.SM80, pc, 1024, 4096, 4096) == (Backend.CUTLASS_SM80, "128x128x64_s4")
    assert pick(Arch.SM80, pc, 4096, 4096, 4096) == (Backend.CUTLASS_SM80, "128x256x64_s3")
    # CUTLASS is per-channel only; Triton tiles by arch and M.
    assert pick(Arch.SM90, gw, 0, 4096, 4096) == (Backend.TRITON, "gemv_16x64x256_splitk")  # no rows: no decode
    # Float group scales at M = 17..128 on Hopper: the unpack-first 64x64 tile (run 54: the in-register tiles
    # collapsed there with group scales), except wide layers from M * N >= 2**17, which take the swap tile (run 56,
    # x de-interleaved).
    assert pick(Arch.SM90, gw, 17, 4096, 4096, 128) == (Backend.TRITON_UNPACKED, "s8s8_64x64x128_w4")
    assert pick(Arch.SM90, gw, 128, 4096, 4096) == (Backend.TRITON_UNPACKED, "s8s8_64x64x128_w4")
    assert pick(Arch.SM90, gw, 17, 14336, 4096, 128) == (Backend.TRITON, "mid_swap_64x128x128")
    assert pick(Arch.SM90, gw, 64, 14336, 4096, 128) == (Backend.TRITON, "mid_swap_64x128x128")
    assert pick(Arch.SM90, gw, 129, 14336, 4096, 128) != (Backend.TRITON, "mid_swap_64x128x128")
    assert pick(Arch.SM90, gw, 17, 4096, 2048, 128) == (Backend.TRITON_UNPACKED, "s8s8_64x64x128_w4")  # M * N < 2**17
    # ... and deep layers (K >= 8192) up to M = 64 the swap tile's split-K form (run 55)
    splitk = (Backend.TRITON, "mid_swap_64x128x128_splitk")
    assert pick(Arch.SM90, gw, 64, 4096, 14336, 128) == splitk
    assert pick(Arch.SM90, gw, 17, 8192, 8192, 128) == splitk
    assert pick(Arch.SM90, gw, 40, 8192, 8192, 64) == splitk
    assert pick(Arch.SM90, gw, 65, 4096, 14336, 128) == (Backend.TRITON_UNPACKED, "s8s8_64x64x128_w4")
    assert pick(Arch.SM90, gw, 64, 4096, 4096 + 128, 128) == (Backend.TRITON_UNPACKED, "s8s8_64x64x128_w4")
    assert pick(Arch.SM90, pc, 64, 4096, 14336) != splitk  # per channel: the CUTLASS rows
    assert pick(Arch.SM80, gw, 64, 4096, 14336, 128) == (Backend.TRITON, "mid_64x128x128")  # Hopper only
    assert pick(Arch.SM90, pc, 128, 4000, 4096) == (Backend.TRITON, "mid_swap_64x128x128")  # per channel: as before
    assert pick(Arch.SM80, gw, 128, 4096, 4096) == (Backend.TRITON, "mid_64x128x128")
    # From M = 129 the weight is unpacked to int8 first: its own tiles for group-wise and per-channel scales.
    assert pick(Arch.SM90, gw, 129, 4096, 4096, 128) == (Backend.TRITON_UNPACKED, "s8s8_64x128x128_w4_s3")
    assert pick(Arch.SM90, gw, 512, 4096, 4096, 128) == (Backend.TRITON_UNPACKED, "s8s8_64x128x128_w4_s3")
    assert pick(Arch.SM80, gw, 4096, 4096, 4096, 128) == (Backend.TRITON_UNPACKED, "s8s8_64x128x128_w4_s3")
    # Group-wise from M = 513 on Hopper: the CUTLASS group-promoting kernel (ping-pong tile; the wider tile once
    # M * N >= 2**25); groups its rows do not take (32, 64: configs exist, unmeasured), and shapes it cannot take,
    # stay on Triton.
    groupwise_cutlass = Backend.CUTLASS_SM90_GROUPWISE
    assert pick(Arch.SM90, gw, 513, 4096, 4096, 128) == (groupwise_cutlass, "128x128x128_g128_pp")
    assert pick(Arch.SM90, gw, 1024, 4096, 4096, 256) == (groupwise_cutlass, "128x128x128_g128_pp")
    assert pick(Arch.SM90, gw, 4096, 4096, 4096, 128) == (groupwise_cutlass, "128x128x128_g128_pp")
    assert pick(Arch.SM90, gw, 4096, 14336, 4096, 128) == (groupwise_cutlass, "128x192x128_g128")
    assert pick(Arch.SM90, gw, 4096, 4096, 4096, 64) == (Backend.TRITON_UNPACKED, "s8s8_64x128x128_w4_s3")
    assert pick(Arch.SM90, gw, 4096, 4000, 4096, 128) == (Backend.TRITON_UNPACKED, "s8s8_64x128x128_w4_s3")
    assert pick(Arch.SM90, gw, 4096, 4096, 4096) == (Backend.TRITON_UNPACKED, "s8s8_64x128x128_w4_s3")  # no group
    # Group scales with their integer multipliers on Hopper: the CUTLASS kernels multiplying on the upcast from
    # M = 17 (up to 16 the CUDA GEMV's float group scales are faster, since session 68); 128-row tiles on wide
    # layers and M * N >= 2**19 up to M = 64, else the 16-row tile; up to M = 512 the 128-row tile (the 256-row one
    # on wide layers once M * N >= 2**21), then the 256-row tile. Where they cannot run (Ampere, groups that are not
    # 128s, N % 16), from M = 129 the multiplying unpack and the per-channel main loop; below, and without the
    # multipliers, the rows above.
    m16, m128, m256 = (
        (Backend.CUTLASS_SM90_MULT, c) for c in ("16x128x128_ws_mult", "128x128x128_coop_mult", "256x128x128_coop_mult")
    )
    mult = (Backend.TRITON_UNPACKED_MULT, "s8s8_128x128x128_w8_s3")
    pick_mult = lambda *a: (choose(*a, has_mult=True).backend, choose(*a, has_mult=True).config)
    assert pick_mult(Arch.SM90, gw, 1, 4096, 4096, 128) == pick(Arch.SM90, gw, 1, 4096, 4096, 128)
    assert pick_mult(Arch.SM90, gw, 8, 14336, 4096, 128) == pick(Arch.SM90, gw, 8, 14336, 4096, 128)
    assert pick_mult(Arch.SM90, gw, 16, 4096, 4096, 128) == (cuda, "mma_n1k8_pf0")  # N * K <= 2**25
    assert pick_mult(Arch.SM90, gw, 9, 14336, 4096, 128) == (cuda, "mma_n2k4_pf0")  # wide: the float scales
    assert pick_mult(Arch.SM90, gw, 16, 4096, 14336, 128) == (cuda, "mma_n4k2_s2_pf2")  # deep: the float scales
    assert pick_mult(Arch.SM90, gw, 17, 14336, 4096, 128) == m128
    assert pick_mult(Arch.SM90, gw, 64, 8192, 8192, 128) == m128  # M * N = 2**19
    assert pick_mult(Arch.SM90, gw, 32, 8192, 8192, 128) == m16
    assert pick_mult(Arch.SM90, gw, 64, 4096, 14336, 128) == m16
    assert pick_mult(Arch.SM90, gw, 65, 4096, 4096, 128) == m128
    assert pick_mult(Arch.SM90, gw, 128, 14336, 4096, 128) == m128  # wide, M * N < 2**21
    assert pick_mult(Arch.SM90, gw, 256, 14336, 4096, 128) == m256
    assert pick_mult(Arch.SM90, gw, 512, 8192, 8192, 128) == m128
    assert pick_mult(Arch.SM90, gw, 513, 4096, 4096, 128) == m256
    assert pick_mult(Arch.SM90, gw, 4096, 4096, 4096, 256) == m256
    assert pick_mult(Arch.SM90, gw, 4096, 4096, 4096, 64) == mult  # a group under the 128-deep tile
    assert pick_mult(Arch.SM90, gw, 4096, 4104, 4096, 128) == mult  # N % 16
    assert pick_mult(Arch.SM80, gw, 4096, 4096, 4096, 32) == mult
    assert pick_mult(Arch.SM80, gw, 129, 14336, 4096, 128) == mult
    assert pick_mult(Arch.SM80, gw, 128, 4096, 4096, 128) == (Backend.TRITON, "mid_64x128x128")
    assert pick_mult(Arch.SM90, gw, 64, 4096, 4096, 64) == (Backend.TRITON_UNPACKED, "s8s8_64x64x128_w4")
    assert pick_mult(Arch.SM90, pc, 4096, 4096, 4096) == pick(Arch.SM90, pc, 4096, 4096, 4096)  # per channel
    unaligned = (Backend.TRITON_UNPACKED, "s8s8_128x128x128_w8_s3")
    assert pick(Arch.SM90, pc, 4096, 4000, 4096) == unaligned  # CUTLASS cannot take N % 8: the next rule
    assert pick(Arch.OTHER, pc, 4096, 4096, 4096) == unaligned
    assert choose(Arch.OTHER, pc, 64, 4096, 4096).backend is Backend.TRITON


def test_rows_needing_multipliers_match_only_calls_that_pass_them(fake_cutlass, monkeypatch):
    """A row with needs_mult is taken only when the call passes the group scales' integer multipliers, and only
    where the multiplier kernel can take the shape (groups of 128s, N % 16); without the multipliers, or past those
    limits, the next rows apply."""
    from lowbit_flex.kernels import s8s4_cutlass
    from lowbit_flex.kernels.s8s4_dispatch import Arch, Backend, ScaleKind, choose

    monkeypatch.setattr(s8s4_cutlass, "cutlass_s8s4_supported", cutlass_s8s4_supported_on_sm90)
    choose.cache_clear()
    gw, mult = ScaleKind.GROUPWISE, Backend.CUTLASS_SM90_MULT
    assert choose(Arch.SM90, gw, 4096, 4096, 4096, 128, has_mult=True).backend is mult
    assert choose(Arch.SM90, gw, 4096, 4096, 4096, 256, has_mult=True).backend is mult
    assert choose(Arch.SM90, gw, 4096, 4096, 4096, 128).backend is Backend.CUTLASS_SM90_GROUPWISE  # no multipliers
    assert choose(Arch.SM90, gw, 64, 4096, 4096, 128).backend is Backend.TRITON_UNPACKED  # float group scales
    assert choose(Arch.SM90, gw, 4096, 4096, 4096, 64, has_mult=True).backend is not mult  # group under the tile
    assert choose(Arch.SM90, gw, 4096, 4104, 4096, 128, has_mult=True).backend is not mult  # N % 16
    assert choose(Arch.SM90, gw, 64, 4104, 4096, 128, has_mult=True).backend is not mult
    assert choose(Arch.SM80, gw, 4096, 4096, 4096, 128, has_mult=True).backend is not mult
    choose.cache_clear()


def test_whole_layer_with_multipliers_takes_the_decode_kernels_only_where_the_table_does(fake_cutlass, monkeypatch):
    """``lowbit::w4a8_linear`` picks its decode kernels itself, from the dispatch table: with group multipliers the
    decode kernel runs at M <= 16 (no multiplier row precedes it there), and from M = 17 the table's CUTLASS
    multiplier row comes first, so no decode kernel is taken (the GEMM path runs that row)."""
    from lowbit_flex.kernels import s8s4_dispatch
    from lowbit_flex.kernels.s8s4_dispatch import Backend
    from lowbit_flex.ops.w4a8_linear import _decode_path

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    s8s4_dispatch._cuda_arch.cache_clear()
    _decode_path.cache_clear()
    cuda = torch.device("cuda", 0)
    try:
        wide = _decode_path(cuda, 16, 14336, 4096, 128, has_mult=True)
        assert (wide.backend, wide.config) == (Backend.CUDA_GEMV, "mma_n2k4_pf0")
        plain = _decode_path(cuda, 16, 14336, 4096, 128)  # the same kernel reads the float group scales
        assert (plain.backend, plain.config) == (wide.backend, wide.config)
        assert _decode_path(cuda, 16, 4096, 14336, 128, has_mult=True).config == "mma_n4k2_s2_pf2"  # deep
        assert _decode_path(cuda, 17, 14336, 4096, 128, has_mult=True) is None  # the multiplier GEMM
    finally:
        s8s4_dispatch._cuda_arch.cache_clear()
        _decode_path.cache_clear()


def cutlass_s8s4_supported_on_sm90(family, M, N, K):
    return family == "sm90" and N % 8 == 0 and K % 32 == 0


def test_forced_multiplier_backend_needs_the_multipliers():
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

    x, xs, w, ws, bias, _ = _inputs((3,), 32, 256, 2)
    with pytest.raises(ValueError, match="_backend: cutlass_sm90_mult cannot take"):
        s8s4_linear_cuda(x, xs, w, ws, bias, torch.bfloat16, _backend="cutlass_sm90_mult")


def test_every_triton_rule_names_a_config_of_its_kernel():
    from lowbit_flex.kernels.s8s4_dispatch import DISPATCH_TABLE, Backend

    names = [r.config for r in DISPATCH_TABLE if r.backend is Backend.TRITON]
    last = DISPATCH_TABLE[-1]
    assert names and last.backend is Backend.TRITON_UNPACKED and (last.max_m, last.scale, last.arch) == (None,) * 3
    pytest.importorskip("triton")
    from lowbit_flex.kernels.s8s4_decode import DECODE_CONFIGS, DECODE_MAX_M
    from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS
    from lowbit_flex.kernels.s8s4_unpacked_gemm import UNPACKED_CONFIGS

    assert set(names) <= set(TRITON_CONFIGS)
    assert {r.config for r in DISPATCH_TABLE if r.backend is Backend.TRITON_UNPACKED} <= set(UNPACKED_CONFIGS)
    decode = [r for r in DISPATCH_TABLE if r.backend is Backend.TRITON_DECODE]
    assert decode and all(r.config in DECODE_CONFIGS and r.max_m <= DECODE_MAX_M for r in decode)
    from lowbit_flex.kernels.s8s4_gemv import GEMV_CONFIGS, GEMV_MAX_M

    gemv = [r for r in DISPATCH_TABLE if r.backend is Backend.TRITON_GEMV]
    assert gemv and all(r.config in GEMV_CONFIGS and r.max_m <= GEMV_MAX_M for r in gemv)
    from lowbit_flex.kernels.w4a8_gemv_cuda import GEMV_CUDA_CONFIGS, MAX_M

    cuda = [r for r in DISPATCH_TABLE if r.backend is Backend.CUDA_GEMV]
    assert cuda and all(r.config in GEMV_CUDA_CONFIGS and r.max_m <= MAX_M for r in cuda)


def test_unloadable_cutlass_library_falls_back_to_triton_after_one_warning(fake_cutlass, monkeypatch):
    """A GPU whose CUDA library cannot be built: every W4A8 GEMM runs on Triton, with one warning per process."""
    from lowbit_flex.kernels import s8s4_dispatch
    from lowbit_flex.kernels.s8s4_dispatch import Arch, Backend, ScaleKind, choose

    def no_library():
        raise fake_cutlass.CudaBuildError("nvcc not found (simulated)")

    monkeypatch.setattr(fake_cutlass, "load", no_library)
    warning = r"CUDA library \(CUTLASS W4A8 GEMMs, the decode GEMVs\) is unavailable.*To build them: a CUDA toolkit"
    with pytest.warns(RuntimeWarning, match=warning) as caught:
        rules = [choose(a, ScaleKind.PER_CHANNEL, m, 4096, 4096) for a in (Arch.SM80, Arch.SM90) for m in (1, 64, 4096)]
    assert {r.backend for r in rules} == {Backend.TRITON_GEMV, Backend.TRITON, Backend.TRITON_UNPACKED}
    assert len([w for w in caught if issubclass(w.category, RuntimeWarning)]) == 1
    if kernel_device() is None:
        return
    # And the GEMM itself runs on Triton, exactly, as a Hopper would dispatch it (arch forced, kernel interpreted).
    choose.cache_clear()
    monkeypatch.setattr(s8s4_dispatch, "arch_of", lambda device: Arch.SM90)
    x, xs, w, ws, bias, q = _inputs((3,), 40, 256, None, device=kernel_device())
    out = s8s4_dispatch.s8s4_linear_cuda(x, xs, w, ws, bias, torch.bfloat16)
    exact, magnitude = _exact_f64(x.cpu(), xs.cpu(), q, ws.cpu(), bias.cpu())
    _assert_close_to_exact(out, exact, magnitude + bias.abs().double().cpu(), torch.bfloat16, fp32_terms=5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU whose CUDA library build is then disabled")
def test_gpu_without_the_cuda_library_runs_triton_after_one_warning(tmp_path):
    """A fresh process with the build disabled and an empty cache: CUTLASS cannot load, so the per-channel GEMMs
    the table sends to CUTLASS run on Triton, exactly, and the process is told once."""
    code = (
        "import warnings, torch, lowbit_flex\n"
        "from lowbit_flex.quant import pack_int4\n"
        "warnings.simplefilter('always')\n"
        "op = torch.ops.lowbit.s8s4_linear\n"
        "x = torch.randint(-128, 128, (64, 256), dtype=torch.int8)\n"
        "w = pack_int4(torch.randint(-8, 8, (128, 256), dtype=torch.int8))\n"
        "xs, ws = torch.rand(64) + 0.5, torch.rand(128) + 0.5\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    outs = [op(x.cuda(), xs.cuda(), w.cuda(), ws.cuda()) for _ in range(3)]\n"
        "n = sum('decode GEMVs) is unavailable' in str(c.message) for c in caught)\n"
        "assert n == 1, n\n"
        "ref = op(x, xs, w, ws).double()\n"
        "for out in outs:\n"
        "    torch.testing.assert_close(out.cpu().double(), ref, rtol=2**-7, atol=0)\n"
    )
    env = {**os.environ, "LOWBIT_FLEX_NO_BUILD": "1", "LOWBIT_FLEX_CACHE": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)


# --- Triton kernel (under TRITON_INTERPRET=1 on CPU; on a GPU, the real kernel) -----------------------------------
needs_kernel = pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")


def _tiny_configs():
    from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS, TritonConfig

    # Interpreter-sized versions of each named config: the same constexpr paths (swap-AB, split-K) on small tiles.
    return {
        n: TritonConfig(16, 32, 64, c.num_warps, c.num_stages, c.swap_ab, c.split_k) for n, c in TRITON_CONFIGS.items()
    }


@needs_kernel
@pytest.mark.parametrize(
    "config", ["gemv_16x64x256_splitk", "mid_64x128x128", "mid_swap_64x128x128", "mid_swap_64x128x128_splitk"]
)
@pytest.mark.parametrize(
    "lead, N, K, groups",
    [((1,), 40, 128, None), ((19,), 33, 96, None), ((2, 5), 40, 256, 4), ((70,), 24, 192, None), ((3, 23), 40, 256, 2)],
)  # M >= 17 rows take the de-interleaved-x path
def test_triton_kernel_matches_exact_reference(monkeypatch, config, lead, N, K, groups):
    from lowbit_flex.kernels import s8s4_linear as mod
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

    dev = kernel_device()
    monkeypatch.setattr(mod, "_PROGRAMS_PER_SM", 64)  # make the split-K configs split K even on small problems
    allocated = []
    real_empty = torch.empty

    def poisoned_empty(*a, **k):
        t = poison_(real_empty(*a, **k))
        allocated.append(tuple(t.shape))
        return t

    monkeypatch.setattr(mod.torch, "empty", poisoned_empty)
    x, xs, w, ws, bias, q = _inputs(lead, N, K, groups, device=dev)
    out = s8s4_linear_cuda(x, xs, w, ws, bias, torch.bfloat16, _backend="triton", _config=_tiny_configs()[config])
    assert out.shape == (*lead, N)
    assert_fully_written(out)
    if mod.TRITON_CONFIGS[config].split_k:
        assert any(len(s) == 3 and s[0] > 1 for s in allocated), "split-K path not taken"
    exact, magnitude = _exact_f64(x.cpu(), xs.cpu(), q, ws.cpu(), bias.cpu())
    magnitude = magnitude + bias.abs().double().cpu()
    _assert_close_to_exact(out, exact, magnitude, torch.bfloat16, fp32_terms=(groups or 1) + 4)


@needs_kernel
def test_triton_kernel_extremes_fp16_no_bias_and_dispatch():
    """All-extreme values (largest |dot|), (M, 1) scales, fp16 out, no bias, through the op's CUDA dispatch."""
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

    dev, K = kernel_device(), 512
    x = torch.full((3, K), -128, dtype=torch.int8)
    x[1] = 127
    q = torch.full((20, K), -8, dtype=torch.int8)
    q[::2] = 7
    xs, ws = torch.full((3, 1), 1e-4), torch.full((20,), 1e-3)
    out = s8s4_linear_cuda(x.to(dev), xs.to(dev), pack_int4(q).to(dev), ws.to(dev), None, torch.float16)
    assert out.dtype == torch.float16
    exact, magnitude = _exact_f64(x, xs, q, ws, None)
    _assert_close_to_exact(out, exact, magnitude, torch.float16, fp32_terms=4)


@needs_kernel
def test_triton_kernel_is_deterministic_with_split_k(monkeypatch):
    from lowbit_flex.kernels import s8s4_linear as mod

    monkeypatch.setattr(mod, "_PROGRAMS_PER_SM", 64)
    x, xs, w, ws, bias, _ = _inputs((3,), 32, 512, None, device=kernel_device())
    cfg = _tiny_configs()["gemv_16x64x256_splitk"]
    a = mod.s8s4_linear_triton(x, xs, w, ws, bias, torch.bfloat16, cfg)
    b = mod.s8s4_linear_triton(x, xs, w, ws, bias, torch.bfloat16, cfg)
    assert torch.equal(a, b)


def test_split_count_and_block_k():
    from lowbit_flex.kernels.common import largest_pow2_divisor
    from lowbit_flex.kernels.s8s4_linear import _split_count

    assert largest_pow2_divisor(14336, 256) == 256 and largest_pow2_divisor(96, 256) == 32
    splits, per = _split_count(k_blocks=16, tiles=64, sms=132)  # 4 programs / SM wanted: ~8 splits
    assert splits * per >= 16 and (splits - 1) * per < 16 and splits == 8
    assert _split_count(k_blocks=16, tiles=10_000, sms=132) == (1, 16)
