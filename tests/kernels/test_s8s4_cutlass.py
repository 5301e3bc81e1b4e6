"""The CUTLASS W4A8 kernels against an exact integer reference (GPU), and their Python-side contract (CPU)."""

import re
from pathlib import Path

import pytest
import torch

from lowbit_flex.kernels import s8s4_cutlass as mod
from lowbit_flex.kernels.s8s4_cutlass import CUTLASS_CONFIGS, cutlass_s8s4_supported
from lowbit_flex.testing import assert_fully_written, poison_

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: the CUTLASS kernels have no CPU or interpreter path"
)
HEADER = Path(__file__).resolve().parents[2] / "lowbit_flex" / "csrc" / "s8s4_gemm" / "s8s4_configs.h"
ALL_CONFIGS = [(v, c) for v, names in CUTLASS_CONFIGS.items() for c in names]
# Unit roundoff of the output dtype: the only error the tolerance allows beyond a few fp32 roundings.
UNIT_ROUNDOFF = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
SMALLEST_SUBNORMAL = {torch.float16: 2.0**-24, torch.bfloat16: 2.0**-133}


def pack_int4(w: torch.Tensor) -> torch.Tensor:
    """(N, K) int values in [-8, 7] -> (N, K // 2) int8, element 2j in the low nibble of byte j."""
    lo, hi = w[:, 0::2].to(torch.int16) & 0xF, w[:, 1::2].to(torch.int16) & 0xF
    return (lo | (hi << 4)).to(torch.uint8).view(torch.int8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`, sign-extending each nibble (two's complement)."""
    b = packed.to(torch.int16)
    lo = ((b & 0xF) ^ 8) - 8
    hi = b >> 4  # arithmetic shift of the sign-extended byte: the high nibble, signed
    return torch.stack((lo, hi), dim=-1).reshape(packed.shape[0], -1)


def reference(x, x_scale, w_packed, w_scale, bias) -> torch.Tensor:
    """float64 of (exact int64 dot products) * x_scale * w_scale + bias, on CPU."""
    acc = x.cpu().long() @ unpack_int4(w_packed.cpu()).long().t()
    out = acc.double() * x_scale.cpu().double()[:, None] * w_scale.cpu().double()[None, :]
    return out if bias is None else out + bias.cpu().double()


def assert_matches_reference(out, ref, x_scale, w_scale, bias, name=""):
    """|out - ref| <= u·|ref| (one rounding to out.dtype) + the few fp32 roundings of the epilogue."""
    dt = out.dtype
    out64 = out.cpu().double()
    assert torch.isfinite(out64).all(), f"{name}: non-finite output"
    scale_part = ref if bias is None else ref - bias.cpu().double()
    bias_mag = 0 if bias is None else bias.cpu().double().abs()
    fp32_err = 4 * 2.0**-24 * (scale_part.abs() + bias_mag)
    tol = UNIT_ROUNDOFF[dt] * ref.abs() + fp32_err + SMALLEST_SUBNORMAL[dt] / 2
    err = (out64 - ref).abs()
    bad = err > tol
    if bad.any():
        i = tuple(bad.nonzero()[0].tolist())
        raise AssertionError(f"{name}: {int(bad.sum())} elements off, first at {i}: {out64[i]} vs {ref[i]}")


def random_problem(M, N, K, device, *, bias=True, x_scale_range=(-3.0, -1.0), w_scale_range=(-3.0, -1.0)):
    """Fresh random operands: full int8 and int4 ranges, scales log-uniform in 10**range, in random order."""
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    w = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    xs = 10 ** torch.empty(M, dtype=torch.float64).uniform_(*x_scale_range)
    ws = 10 ** torch.empty(N, dtype=torch.float64).uniform_(*w_scale_range)
    b = torch.randn(N, dtype=torch.float64) * 4 if bias else None
    to = lambda t: None if t is None else t.to(device)
    return to(x), to(xs.float()), to(pack_int4(w)), to(ws.float()), to(None if b is None else b.float())


def run_poisoned(monkeypatch, *args, **kwargs) -> torch.Tensor:
    """Call the wrapper with every tensor it allocates (output, workspace) poisoned first."""
    real_empty = torch.empty
    with monkeypatch.context() as m:
        m.setattr(mod.torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
        out = mod.s8s4_linear_cutlass(*args, **kwargs)
    assert_fully_written(out)
    return out


def skip_unless_supported(family, M, N, K):
    if not cutlass_s8s4_supported(family, M, N, K):
        pytest.skip(f"CUTLASS {family} does not run M={M} N={N} K={K} on {torch.cuda.get_device_name()}")


# ---------------------------------------------------------------------------------------------------------- CPU


def test_configs_match_csrc_header():
    """CUTLASS_CONFIGS must list the header's configs in the header's order (the launchers index by position)."""
    text = HEADER.read_text()
    for family in CUTLASS_CONFIGS:
        block = re.search(rf"#define LOWBIT_S8S4_{family.upper()}_CONFIGS\(X\)(.*?)(?:\n\n|\Z)", text, re.S)
        assert block, f"LOWBIT_S8S4_{family.upper()}_CONFIGS not found in {HEADER}"
        entries = re.findall(r'X\((\d+), "([^"]+)"', block.group(1))
        assert [int(i) for i, _ in entries] == list(range(len(entries)))
        assert tuple(name for _, name in entries) == CUTLASS_CONFIGS[family]


def test_every_cutlass_rule_names_a_config_of_its_family():
    from lowbit_flex.kernels.s8s4_dispatch import _CUTLASS_FAMILY, DISPATCH_TABLE

    rules = [r for r in DISPATCH_TABLE if r.backend in _CUTLASS_FAMILY]
    assert rules and all(r.config in CUTLASS_CONFIGS[_CUTLASS_FAMILY[r.backend]] for r in rules)


def test_unknown_family_raises():
    with pytest.raises(ValueError, match="family"):
        cutlass_s8s4_supported("sm70", 1, 8, 32)


@pytest.mark.parametrize(
    "capability, family, expected",
    [((8, 0), "sm80", True), ((8, 6), "sm80", True), ((9, 0), "sm80", True), ((9, 0), "sm90", True),
     ((8, 0), "sm90", False), ((8, 9), "sm90", False), ((10, 0), "sm80", False), ((10, 0), "sm90", False)],
)  # fmt: skip
def test_supported_by_arch(monkeypatch, capability, family, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert cutlass_s8s4_supported(family, 3, 24, 96) is expected


@pytest.mark.parametrize(
    "M, N, K, expected",
    [(1, 8, 32, True), (17, 136, 4096, True), (0, 8, 32, False), (1, 12, 32, False), (1, 4, 32, False),
     (1, 8, 48, False), (1, 8, 16, False), (1, 8, 2**21, False)],
)  # fmt: skip
def test_supported_by_shape(monkeypatch, M, N, K, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    for family in CUTLASS_CONFIGS:
        assert cutlass_s8s4_supported(family, M, N, K) is expected


def test_not_supported_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not any(cutlass_s8s4_supported(v, 16, 128, 128) for v in CUTLASS_CONFIGS)


def test_reference_packing_convention():
    """The test's own int4 helpers: low nibble first, two's complement, round trip, and the reference's math."""
    w = torch.tensor([[-8, 7, 1, -1, 0, -5]], dtype=torch.int8)
    packed = pack_int4(w)
    assert packed.view(torch.uint8).tolist() == [[0x78, 0xF1, 0xB0]]
    assert torch.equal(unpack_int4(packed), w.to(torch.int16))
    w = torch.randint(-8, 8, (5, 64), dtype=torch.int8)
    assert torch.equal(unpack_int4(pack_int4(w)), w.to(torch.int16))
    x = torch.randint(-128, 128, (3, 64), dtype=torch.int8)
    xs, ws, b = torch.rand(3) + 0.5, torch.rand(5) + 0.5, torch.randn(5)
    expect = [
        [sum(int(x[m, k]) * int(w[n, k]) for k in range(64)) * float(xs[m]) * float(ws[n]) + float(b[n])
         for n in range(5)] for m in range(3)
    ]  # fmt: skip
    torch.testing.assert_close(reference(x, xs, pack_int4(w), ws, b), torch.tensor(expect, dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------- GPU


@requires_cuda
@pytest.mark.parametrize("family", sorted(CUTLASS_CONFIGS))
def test_library_exports_the_configs(family):
    """The built library's config table (via ctypes) is CUTLASS_CONFIGS: indices and names agree."""
    assert mod.library_config_names(family) == CUTLASS_CONFIGS[family]


# Ragged M and N (not multiples of any tile), M = 1, odd M, K not a multiple of the K tile, and a large K.
SHAPES = [(1, 8, 32), (3, 24, 96), (17, 136, 4096), (129, 24, 96), (1, 4104, 4096), (300, 520, 1056)]


@requires_cuda
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family, config", ALL_CONFIGS)
@pytest.mark.parametrize("M, N, K", SHAPES)
def test_matches_exact_reference(monkeypatch, M, N, K, family, config, out_dtype):
    skip_unless_supported(family, M, N, K)
    args = random_problem(M, N, K, "cuda")
    out = run_poisoned(monkeypatch, *args, out_dtype, family, config)
    assert out.shape == (M, N) and out.dtype == out_dtype
    assert_matches_reference(out, reference(*args), args[1], args[3], args[4], name=config)


@requires_cuda
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family, config", ALL_CONFIGS)
def test_extreme_integer_values(monkeypatch, family, config, out_dtype):
    """int4 -8 and 7, int8 -128 and 127 throughout: the largest |acc| (K * 1024) and the sign-extension paths."""
    M, N, K = 33, 72, 4096
    skip_unless_supported(family, M, N, K)
    x = torch.where(torch.rand(M, K) < 0.5, -128, 127).to(torch.int8)
    w = torch.where(torch.rand(N, K) < 0.5, -8, 7).to(torch.int8)
    x[0], w[0] = -128, -8  # one output at exactly +K * 1024 = 2**22
    xs = torch.full((M,), 2.0**-12) * (1 + torch.rand(M))
    ws = torch.full((N,), 2.0**-12) * (1 + torch.rand(N))
    args = [t.cuda() for t in (x, xs, pack_int4(w), ws)]
    out = run_poisoned(monkeypatch, *args, None, out_dtype, family, config)
    ref = reference(*args, None)
    assert_matches_reference(out, ref, args[1], args[3], None, name=config)
    assert out[0, 0].item() == pytest.approx(K * 1024 * xs[0].item() * ws[0].item(), rel=UNIT_ROUNDOFF[out_dtype])


@requires_cuda
@pytest.mark.parametrize("family, config", ALL_CONFIGS)
def test_extreme_scales(monkeypatch, family, config):
    """Scales over many decades (bf16 keeps fp32's range; fp16 outputs stay within its normal range)."""
    M, N, K = 40, 200, 256
    skip_unless_supported(family, M, N, K)
    for out_dtype, xr, wr in ((torch.bfloat16, (-30, 10), (-25, 12)), (torch.float16, (-6, 0), (-5, -1))):
        # No bias: it would hide the tiny products.
        args = random_problem(M, N, K, "cuda", bias=False, x_scale_range=xr, w_scale_range=wr)
        out = run_poisoned(monkeypatch, *args, out_dtype, family, config)
        assert_matches_reference(out, reference(*args), args[1], args[3], args[4], name=f"{config} {out_dtype}")


@requires_cuda
@pytest.mark.parametrize("family, config", ALL_CONFIGS)
def test_no_bias_equals_zero_bias_and_runs_are_deterministic(family, config):
    M, N, K = 9, 264, 512
    skip_unless_supported(family, M, N, K)
    x, xs, w, ws, _ = random_problem(M, N, K, "cuda", bias=False)
    none = mod.s8s4_linear_cutlass(x, xs, w, ws, None, torch.bfloat16, family, config)
    zero = mod.s8s4_linear_cutlass(x, xs, w, ws, torch.zeros_like(ws), torch.bfloat16, family, config)
    again = mod.s8s4_linear_cutlass(x, xs, w, ws, None, torch.bfloat16, family, config)
    assert torch.equal(none, zero) and torch.equal(none, again)  # int32 split/stream-K sums are exact


@requires_cuda
@pytest.mark.parametrize("family", sorted(CUTLASS_CONFIGS))
def test_misaligned_operands_are_copied_not_misread(family):
    M, N, K = 5, 40, 96
    skip_unless_supported(family, M, N, K)
    x, xs, w, ws, b = random_problem(M, N, K, "cuda")
    w_off = torch.empty(w.numel() + 1, dtype=torch.int8, device="cuda")[1:].view_as(w).copy_(w)
    b_off = torch.empty(N + 1, device="cuda")[1:].copy_(b)
    assert w_off.data_ptr() % 16 and b_off.data_ptr() % 16
    out = mod.s8s4_linear_cutlass(x, xs, w_off, ws, b_off, torch.float16, family, CUTLASS_CONFIGS[family][0])
    assert_matches_reference(out, reference(x, xs, w, ws, b), xs, ws, b, name=family)


@requires_cuda
def test_forced_cutlass_on_an_unsupported_shape_raises():
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

    x, xs, w, ws, b = random_problem(4, 12, 64, "cuda")  # N % 8 != 0
    with pytest.raises(ValueError, match="cannot take"):
        s8s4_linear_cuda(x, xs, w, ws, b, torch.float16, _backend="cutlass_sm80")
