"""The CUDA fp8 / fp6 / fp4 weight-only decode GEMV (``lowbit_flex.kernels.float_weight_gemv_cuda``) against float64
on an sm_90 GPU (every config, format and dtype; outputs poisoned first), and its Python-side contract (config
table vs header, support rules, the dispatch) on any machine."""

import re
from pathlib import Path

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.kernels import float_weight_gemv_cuda as mod
from lowbit_flex.quant import E2M1_FN, E2M3_FN, E3M2_FN, E4M3FN
from tests.kernels.test_float_weight_kernels import _run, assert_nan_row_stays_in_its_row, weight_of_codes
from tests.ops._weight_only_reference import assert_within, exact_linear

requires_sm90 = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (9, 0),
    reason="needs an sm_90 GPU: the dispatch runs the kernel there only (mma.sync, no CPU or interpreter path)",
)
CSRC = Path(__file__).resolve().parents[2] / "lowbit_flex/csrc"
HEADER = CSRC / "float_weight_gemv/float_weight_gemv.h"
FORMATS = [E4M3FN, E3M2_FN, E2M3_FN, E2M1_FN]


def test_config_names_match_the_header():
    names = tuple(re.findall(r'X\(\d+, "(\w+)", \d+, \d+\)', HEADER.read_text()))
    assert names == mod.GEMV_CUDA_CONFIGS
    assert mod.FORMAT_CODE == {(4, 3): 0, (3, 2): 1, (2, 3): 2, (2, 1): 3}
    enum = re.search(r"enum FpxFormat : int \{([^}]*)\}", (CSRC / "common/fpx_format.h").read_text()).group(1)
    assert re.findall(r"(kE\w+) = (\d+)", enum) == [("kE4M3", "0"), ("kE3M2", "1"), ("kE2M3", "2"), ("kE2M1", "3")]


@pytest.mark.parametrize(
    "M, K, bits, ok",
    [(1, 128, 8, True), (16, 8, 4, True), (17, 128, 4, False), (0, 128, 4, False), (1, 136, 8, False),
     (1, 136, 6, True), (1, 4, 4, False), (2, 300, 6, False)],
)  # fmt: skip
def test_supports(M, K, bits, ok):
    assert mod.gemv_cuda_supports(M, K, bits) is ok


@pytest.mark.parametrize(
    "n, sms, want",
    [(4096, 132, "cp_n1k8"), (8192, 132, "cp_n2k4"), (14336, 132, "cp_n4k2"), (28672, 132, "cp_n4k2"),
     (1, 1, "cp_n1k8"), (8192, 256, "cp_n1k8"), (4224, 132, "cp_n1k8"), (4240, 132, "cp_n2k4")],
)  # fmt: skip
def test_config_by_n_plans_one_wave_of_row_tiles(n, sms, want):
    # The fewest warps along N leaving at most two CTAs' row tiles (16 rows per warp) per SM (run 37's best configs
    # on the H200's 132 SMs: 4096 rows n1k8, 8192 n2k4, 14336 n4k2); past four warps along N, n4k2 still.
    assert mod.gemv_cuda_config(n, sms) == want
    assert want in mod.GEMV_CUDA_CONFIGS


def test_dispatch_takes_it_only_where_it_runs(monkeypatch):
    from lowbit_flex.kernels import float_weight_dispatch as d

    for bits in (4, 6, 8):
        assert choose_backend(d, bits, 1, cuda_gemv=False) is not d.Backend.CUDA_GEMV
        assert choose_backend(d, bits, 17, cuda_gemv=True) is not d.Backend.CUDA_GEMV
        # where it can run, some M up to 16 takes it (run 24: fp8 M <= 2, fp4 2..4, fp6 2..8)
        assert any(choose_backend(d, bits, m, cuda_gemv=True) is d.Backend.CUDA_GEMV for m in range(1, 17))
    # not a CUDA device, or before sm_90: never (no library is loaded for the answer)
    monkeypatch.setattr("lowbit_flex.kernels.s8s4_cutlass.library_available", lambda: pytest.fail("loaded"))
    assert not d.cuda_gemv_supported(torch.device("cpu"), 1, 4096, 4)


def test_fp8_takes_it_to_m_8_on_narrow_layers_only():
    # session 72: fp8 at M <= 2 on every layer, at M = 3-8 where M * N <= 2**15 (N = 4096 at M = 8); wider layers and
    # M = 9-16 keep the 16x64 Triton tile (every other backend available, as on an H100 with the CUDA library)
    from lowbit_flex.kernels import float_weight_dispatch as d

    pick = lambda M, n: d.choose(8, M, True, True, True, True, True, True, n, 4096)
    assert all(pick(m, n).backend is d.Backend.CUDA_GEMV for m in (1, 2) for n in (4096, 11008, 14336))
    assert all(pick(m, 4096).backend is d.Backend.CUDA_GEMV for m in (3, 5, 8))
    assert pick(4, 8192).backend is d.Backend.CUDA_GEMV and pick(5, 8192).config == "dot_16x64x2"
    assert all(
        pick(m, n).config == "dot_16x64x2" for m, n in ((8, 8192), (3, 11008), (8, 14336), (9, 4096), (16, 4096))
    )
    assert d.choose(8, 8, True, True, False, True, True, True, 4096, 4096).config == "dot_16x64x2"  # no library


def choose_backend(d, bits, M, cuda_gemv):
    return d.choose(bits, M, True, True, cuda_gemv).backend


@requires_sm90
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("config", mod.GEMV_CUDA_CONFIGS)
# M: one and two 8-token tiles, padded columns; N ragged (rows past N clamped); K: one partial tile, tiles that
# leave some K-split warps without a tile, a long row
@pytest.mark.parametrize("m, n, k", [(1, 9, 144), (2, 264, 1040), (5, 40, 4096), (8, 17, 272), (9, 72, 2320),
                                     (16, 136, 14336)])  # fmt: skip
def test_every_config_within_rounding_of_float64(fmt, dtype, config, m, n, k, monkeypatch):
    if fmt.bits != 8 and k % 128 == 16:
        k -= 8  # fp4 / fp6 take any K % 8 == 0 (a partial tile of zero codes)
    if fmt.bits == 8 and dtype == torch.float16:
        k = min(k, 4096)  # e4m3 codes up to 448 times 2 * randn summed over 14336 columns pass fp16's 65504
    out, x, w64, s, b = _run(fmt, m, n, k, "cuda_gemv", config, bias=n % 2 == 0, dtype=dtype, seed=m + k,
                             monkeypatch=monkeypatch)  # fmt: skip
    exact, bound = exact_linear(x, w64, s, b)
    assert float(exact.abs().max()) < torch.finfo(dtype).max, "test data: the exact output overflows the dtype"
    assert_within(out, exact, bound)


@requires_sm90
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("config", mod.GEMV_CUDA_CONFIGS)
def test_persistent_ctas_walk_several_row_tiles(fmt, config, monkeypatch):
    # More row tiles than resident CTAs (up to ~7 per SM), so each CTA's warps carry their ring, x columns and copy
    # addresses across row-tile boundaries; a ragged K tile at the end of every row and a ragged last row tile.
    m, n, k = 3, 30008, 272 if fmt.bits == 8 else 264
    out, x, w64, s, b = _run(fmt, m, n, k, "cuda_gemv", config, bias=True, seed=7, monkeypatch=monkeypatch)
    exact, bound = exact_linear(x, w64, s, b)
    assert_within(out, exact, bound)


@requires_sm90
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_every_code_decodes_exactly(fmt, dtype):
    # Row n of w holds the one-hot code n at column n % K: out = x[:, n % K] * value(code n), one product, exact in
    # fp32 and rounded once (subnormals, -0 and the largest magnitudes included).
    from lowbit_flex.kernels.float_weight_dispatch import Backend, float_weight_only_linear_cuda

    n_codes, K = 2**fmt.bits, 128
    codes = torch.zeros(n_codes, K, dtype=torch.uint8)
    codes[torch.arange(n_codes), torch.arange(n_codes) % K] = torch.arange(n_codes, dtype=torch.uint8)
    w, w64 = weight_of_codes(codes, fmt)  # (e4m3's two NaN codes become their neighbours)
    x = torch.randn(3, K).to(dtype)
    s = torch.ones(n_codes)
    out = float_weight_only_linear_cuda(x.cuda(), w.cuda(), s.cuda(), None, fmt.ebits, fmt.mbits,
                                        backend=Backend.CUDA_GEMV, config="cp_n1k4").cpu()  # fmt: skip
    want = (x.double() @ w64.T).to(dtype)
    assert torch.equal(out, want)


@requires_sm90
def test_nan_in_one_row_stays_in_that_row():
    assert_nan_row_stays_in_its_row(FORMATS, "cuda_gemv", ["cp_n2k4"], 11)


@requires_sm90
def test_library_config_names_match():
    assert mod.library_config_names() == mod.GEMV_CUDA_CONFIGS
