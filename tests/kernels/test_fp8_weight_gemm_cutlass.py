"""The CUTLASS fp8 weight-only GEMM (``lowbit_flex.kernels.fp8_weight_gemm_cutlass``) against float64 on an sm_90 GPU
(every config and dtype, decode to prefill row counts, stream-K splits of long K; outputs poisoned first), and its
Python-side contract (config table vs header, support rules, the dispatch) on any machine."""

import re
from pathlib import Path

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.kernels import fp8_weight_gemm_cutlass as mod
from lowbit_flex.quant import E4M3FN
from tests.kernels.test_float_weight_kernels import _run, _weight
from tests.ops._weight_only_reference import assert_within, exact_linear

requires_sm90 = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
    reason="needs an sm_90 GPU: sm_90a SASS (WGMMA), no CPU or interpreter path",
)
HEADER = Path(__file__).resolve().parents[2] / "lowbit_flex/csrc/fp8_weight_gemm/fp8_weight_gemm_configs.h"


def test_config_names_match_the_header():
    assert tuple(re.findall(r'X\(\d+, "(\w+)"', HEADER.read_text())) == mod.CONFIGS


@pytest.mark.parametrize(
    "N, K, ok", [(8, 16, True), (4096, 14336, True), (12, 4096, False), (4096, 4104, False), (0, 16, False)]
)
def test_supports(N, K, ok):
    assert mod.fp8_weight_gemm_supports(N, K) is ok


def test_dispatch_takes_it_only_where_it_runs(monkeypatch):
    from lowbit_flex.kernels import float_weight_dispatch as d

    for bits in (4, 6, 8):
        for M in (1, 16, 64, 256, 1024, 4096, 16384):
            assert d.choose(bits, M, True, True, True, False).backend is not d.Backend.CUTLASS_GEMM
            if bits != 8:  # fp4 / fp6 never: the kernel reads e4m3 bytes
                assert d.choose(bits, M, True, True, True, True).backend is not d.Backend.CUTLASS_GEMM
    # not an sm_90 CUDA device, or not fp8: never, and no library is loaded for the answer
    monkeypatch.setattr("lowbit_flex.kernels.s8s4_cutlass.library_available", lambda: pytest.fail("loaded"))
    assert not d.cutlass_gemm_supported(torch.device("cpu"), 4096, 4096, 8)
    assert not d.cutlass_gemm_supported(torch.device("cuda"), 4096, 4096, 4)


def test_table_takes_it_for_fp8_prefill_sizes_only():
    # Run 41: fp8 from M = 33 to 4096 (the 16x64 Triton tile keeps M <= 32; dequantize + cuBLAS beyond 4096, untimed)
    from lowbit_flex.kernels import float_weight_dispatch as d

    pick = lambda M, N=4096: d.choose(8, M, True, False, True, True, n=N)
    assert {pick(M).config for M in (33, 64)} == {"64x128x64_coop_sk"}
    assert {pick(M).config for M in (65, 256)} == {"128x128x64_coop_sk"}
    assert {pick(M).config for M in (257, 1024, 4096)} == {"256x128x64_coop"}
    assert all(pick(M).backend is not d.Backend.CUTLASS_GEMM for M in (1, 2, 16, 17, 32, 4097))
    # M = 193..256 with enough output for the 256-token persistent tile (~96 tiles of 256 x 128): run 41 measured
    # 1.03x against the stream-K tile's 0.85x on 4096 x 14336 at M = 256 (112 tiles), and the reverse with 32-64
    # tiles (8192 x 8192: 0.72x against 0.93x)
    assert pick(256, 14336).config == pick(193, 16384).config == "256x128x64_coop"
    assert pick(256, 8192).config == "128x128x64_coop_sk"
    # below, a 256-row tile would be mostly padding: the stream-K tiles stay
    assert pick(192, 28672).config == "128x128x64_coop_sk" and pick(64, 14336).config == "64x128x64_coop_sk"


def test_forcing_it_where_it_cannot_run_names_the_backend():
    from lowbit_flex.kernels.float_weight_dispatch import Backend, float_weight_only_linear_cuda

    w, _ = _weight(E4M3FN, 16, 64, torch.Generator().manual_seed(0))
    x = torch.randn(3, 64, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="^backend: the CUTLASS GEMM needs"):
        float_weight_only_linear_cuda(x, w, torch.ones(16), None, 4, 3, backend=Backend.CUTLASS_GEMM,
                                      config=mod.CONFIGS[0])  # fmt: skip


@requires_sm90
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("config", mod.CONFIGS)
# M: decode sizes, a partial tile, prefill sizes with ragged last tiles; N: one 8-row group, a partial 128/256 tile;
# K: one 16-byte row, a partial 64-wide step, long rows (stream-K splits them over the SMs)
@pytest.mark.parametrize("m, n, k", [(1, 8, 16), (2, 264, 1040), (5, 40, 4096), (16, 136, 272), (17, 72, 2320),
                                     (64, 4096, 4096), (300, 520, 14336), (4096, 264, 1024)])  # fmt: skip
def test_every_config_within_rounding_of_float64(dtype, config, m, n, k, monkeypatch):
    if dtype == torch.float16:
        # random e4m3 codes (rms ~90) times 2 * randn: sums over K columns have a std of ~130 * sqrt(K), so a layer of
        # 4096 x 4096 outputs passes fp16's 65504 somewhere at K = 4096 (measured: inf on the H200)
        k = min(k, 1040)
    out, x, w64, s, b = _run(E4M3FN, m, n, k, "cutlass_gemm", config, bias=n % 16 == 8, dtype=dtype, seed=m + k,
                             monkeypatch=monkeypatch)  # fmt: skip
    exact, bound = exact_linear(x, w64, s, b)
    assert_within(out, exact, bound)


@requires_sm90
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_every_code_decodes_exactly(dtype):
    # Row n of w holds the one-hot code n at column n % K: out = x[:, n % K] * value(code n), one product, exact in
    # fp32 and rounded once (subnormals, -0 and the largest magnitudes included).
    from lowbit_flex.kernels.float_weight_dispatch import Backend, float_weight_only_linear_cuda

    K = 128
    codes = torch.zeros(256, K, dtype=torch.uint8)
    codes[torch.arange(256), torch.arange(256) % K] = torch.arange(256, dtype=torch.uint8)
    codes[(codes & 0x7F) == 0x7F] = 0  # the two NaN codes (finite codes only: the op's contract)
    w = codes.view(torch.float8_e4m3fn)
    x = torch.randn(70, K).to(dtype)
    out = float_weight_only_linear_cuda(x.cuda(), w.cuda(), torch.ones(256).cuda(), None, 4, 3,
                                        backend=Backend.CUTLASS_GEMM, config=mod.CONFIGS[1]).cpu()  # fmt: skip
    assert torch.equal(out, (x.double() @ w.double().T).to(dtype))


@requires_sm90
def test_nan_in_one_row_stays_in_that_row():
    from lowbit_flex.kernels.float_weight_dispatch import Backend, float_weight_only_linear_cuda

    gen = torch.Generator().manual_seed(3)
    w, _ = _weight(E4M3FN, 40, 256, gen)
    x = torch.randn(130, 256, generator=gen).bfloat16()
    x[77, 9] = float("nan")
    for config in mod.CONFIGS:
        out = float_weight_only_linear_cuda(x.cuda(), w.cuda(), torch.ones(40, device="cuda"), None, 4, 3,
                                            backend=Backend.CUTLASS_GEMM, config=config).cpu()  # fmt: skip
        assert torch.isnan(out[77]).all() and not torch.isnan(out[torch.arange(130) != 77]).any(), config


@requires_sm90
def test_misaligned_views_are_copied_not_misread():
    # x and w views starting 8 bytes into their storage (on the GPU too: .cuda() keeps the storage offset): TMA needs
    # 16-byte aligned bases, so the launcher copies them (aligned16) rather than reading from the wrong address.
    from lowbit_flex.kernels.float_weight_dispatch import Backend, float_weight_only_linear_cuda

    gen = torch.Generator().manual_seed(5)
    w, w64 = _weight(E4M3FN, 64, 256, gen)
    w_buf = torch.empty(64 * 256 + 8, dtype=torch.float8_e4m3fn, device="cuda")
    w_buf[8:] = w.flatten().cuda()
    x = torch.randn(97, 256, generator=gen).bfloat16()
    x_buf = torch.empty(97 * 256 + 4, dtype=torch.bfloat16, device="cuda")
    x_buf[4:] = x.flatten().cuda()
    xv, wv = x_buf[4:].view(97, 256), w_buf[8:].view(64, 256)
    assert xv.data_ptr() % 16 and wv.data_ptr() % 16
    s = torch.rand(64, generator=gen) + 0.5
    out = float_weight_only_linear_cuda(xv, wv, s.cuda(), None, 4, 3, backend=Backend.CUTLASS_GEMM,
                                        config=mod.CONFIGS[0]).cpu()  # fmt: skip
    exact, bound = exact_linear(x, w64, s, None)
    assert_within(out, exact, bound)


@requires_sm90
def test_library_config_names_match():
    assert mod.library_config_names() == mod.CONFIGS
