"""The CUDA fp8 / fp6 / fp4 weight-only WGMMA GEMM (``lowbit_flex.kernels.float_weight_gemm_cuda``) against float64
on an sm_90 GPU (every config, format and dtype, split and unsplit K, ragged M / N / K; outputs and split-K partials
poisoned first), and its Python-side contract (config table vs header, support rules, split plans, the dispatch) on
any machine."""

import re
from pathlib import Path

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.kernels import float_weight_gemm_cuda as mod
from lowbit_flex.quant import E2M1_FN, E2M3_FN, E3M2_FN, E4M3FN
from tests.kernels.test_float_weight_kernels import _run, assert_nan_row_stays_in_its_row, weight_of_codes
from tests.ops._weight_only_reference import assert_within, exact_linear

requires_sm90 = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
    reason="needs an sm_90 GPU: wgmma and setmaxnreg (sm_90a SASS), no CPU or interpreter path",
)
HEADER = Path(__file__).resolve().parents[2] / "lowbit_flex/csrc/float_weight_gemm/float_weight_gemm.h"
FORMATS = [E4M3FN, E3M2_FN, E2M3_FN, E2M1_FN]


def test_config_names_and_tiles_match_the_header():
    rows = re.findall(r'X\((\d+), "(\w+)", (\d+), (\d+)\)', HEADER.read_text())
    assert [int(i) for i, *_ in rows] == list(range(len(rows)))
    assert {name: int(bm) for _, name, bm, _ in rows} == mod.GEMM_CUDA_CONFIGS
    assert list(mod.GEMM_CUDA_CONFIGS) == [name for _, name, _, _ in rows]  # launcher index order


@pytest.mark.parametrize(
    "M, K, bits, ok",
    [(1, 128, 4, True), (4096, 8, 6, True), (16, 136, 4, True), (0, 128, 4, False), (16, 4, 4, False),
     (16, 300, 6, False), (16, 128, 8, True), (16, 136, 8, False), (16, 128, 5, False)],
)  # fmt: skip
def test_supports(M, K, bits, ok):
    assert mod.gemm_cuda_supports(M, K, bits) is ok


@requires_sm90
@pytest.mark.parametrize(
    "config, M, N, K, splits",
    [
        ("wgmma_128x128", 4096, 4096, 4096, 1),  # 1024 output tiles fill the SMs: no split, no workspace
        ("wgmma_16x128", 1, 40, 1000, 8),  # one output tile of 8 K tiles: 8 splits of one tile, one cluster
        # 64 output tiles: two splits each where 132 SMs (66 TPCs: every GPC holds whole pairs) take 64 clusters of
        # two; one (no split) below 128 SMs
        ("wgmma_16x128", 1, 8192, 1024, 2),
        ("wgmma_256x128", 300, 264, 2000, 16),  # 6 output tiles, 16 K tiles: one tile per split, past a cluster
    ],
)
def test_split_k_workspace_follows_the_plan(config, M, N, K, splits):
    # About one CTA per SM in flight, never an empty split. Up to 8 splits of a tile form one cluster and add their
    # sums through distributed shared memory (no workspace) where every tile's cluster fits the GPU at once (which
    # depends on how its SMs split into GPCs: the cases here do not); more write splits x M x N fp32 partials.
    import ctypes

    from lowbit_flex.kernels.cutlass_launch import OUT_DTYPE_CODE
    from lowbit_flex.kernels.float_weight_gemv_cuda import FORMAT_CODE

    assert torch.cuda.get_device_properties(0).multi_processor_count >= 16
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = torch.zeros(N, -(-K // 128) * 16, dtype=torch.int32, device="cuda")
    s, out = torch.ones(N, device="cuda"), torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
    need = ctypes.c_size_t(12345)
    status = mod._launcher()(
        list(mod.GEMM_CUDA_CONFIGS).index(config), FORMAT_CODE[2, 1], OUT_DTYPE_CODE[torch.bfloat16], x.data_ptr(),
        w.data_ptr(), s.data_ptr(), None, out.data_ptr(), M, N, K, None, 0, ctypes.byref(need), None,
    )  # fmt: skip
    assert status == 0
    assert need.value == (0 if splits <= 8 else splits * M * N * 4)


_REDUCE_BITS = """
import sys, torch, lowbit_flex
from lowbit_flex.kernels.float_weight_dispatch import Backend, float_weight_only_linear_cuda
g = torch.Generator().manual_seed(7)
w = torch.randint(-2**31, 2**31 - 1, (40, 32 * 16), generator=g, dtype=torch.int32).cuda()  # fp4 tile words
x = torch.randn(3, 4096, generator=g).bfloat16().cuda()
out = float_weight_only_linear_cuda(x, w, torch.rand(40, generator=g).cuda() + 0.5, None, 2, 1,
                                    backend=Backend.CUDA_GEMM, config="wgmma_16x128")
torch.save(out.cpu(), sys.argv[1])
"""


@requires_sm90
def test_the_dependent_reduce_launch_changes_no_bits(tmp_path):
    # One output tile of 32 K tiles: 32 splits, past a cluster, so fp32 partials and the reduce kernel, launched as
    # the GEMM's programmatic dependent (default) or after it (LOWBIT_FLEX_REDUCE_PDL=0, read once per process).
    import os
    import subprocess
    import sys

    outs = []
    for flag in ("1", "0"):
        path = tmp_path / f"out{flag}.pt"
        env = dict(os.environ, LOWBIT_FLEX_REDUCE_PDL=flag)
        subprocess.run([sys.executable, "-c", _REDUCE_BITS, str(path)], check=True, env=env, timeout=120)
        outs.append(torch.load(path))
    assert outs[0].shape == (3, 40) and bool(torch.isfinite(outs[0]).all())
    assert torch.equal(outs[0], outs[1])


def test_table_takes_it_where_run_51_measured_it_faster(monkeypatch):
    from lowbit_flex.kernels import float_weight_dispatch as d

    # every other backend available, as on an H200 with the CUDA library; n: 4096 output channels; k: 0 passes over
    # the rows for large layers (min_nk)
    pick = lambda bits, M, n=4096, k=0: d.choose(bits, M, True, True, True, True, True, True, n, k)

    def gemm(bits, M, n=4096):  # the WGMMA GEMM's config where the table picks it, else None
        rule = pick(bits, M, n)
        return rule.config if rule.backend is d.Backend.CUDA_GEMM else None

    # decode: the GEMVs keep the smallest M, then the 16-row tile for fp4 / fp6; fp8 keeps the 16x64 Triton tile
    assert [gemm(6, m) for m in (1, 4, 5, 16)] == [None, None, "wgmma_16x128", "wgmma_16x128"]
    assert [gemm(4, m) for m in (1, 8, 9, 16)] == [None, None, "wgmma_16x128", "wgmma_16x128"]
    # run 54: on layers of N * K >= 2**25 the 16-row tile from M = 1 for fp4 / fp6 (not fp8); 4096² keeps the GEMVs
    for bits in (4, 6):
        assert all(pick(bits, m, 14336, 4096).config == "wgmma_16x128" for m in (1, 2, 4, 8, 16))
        assert all(pick(bits, m, 8192, 8192).config == "wgmma_16x128" for m in (1, 8))
        assert pick(bits, 1, 4096, 4096) == pick(bits, 1)
        assert d.choose(bits, 1, True, True, True, True, True, False, 14336, 4096).backend is not d.Backend.CUDA_GEMM
    assert pick(8, 1, 14336, 4096) == pick(8, 1) and pick(8, 8, 8192, 8192).config == "dot_16x64x2"
    assert gemm(8, 16) is None and pick(8, 16).config == "dot_16x64x2"
    for bits in (4, 6, 8):  # M = 17-64: the row tile nearest M, every format
        assert [gemm(bits, m) for m in (17, 32, 33, 64)] == ["wgmma_32x128"] * 2 + ["wgmma_64x128"] * 2
    for bits in (4, 6):  # prefill: 128 rows, or 256 where the output has enough tiles of them
        assert [gemm(bits, m) for m in (65, 256, 257, 1024)] == ["wgmma_128x128"] * 2 + ["wgmma_256x128"] * 2
        assert gemm(bits, 256, 14336) == "wgmma_256x128" and gemm(bits, 192, 14336) == "wgmma_128x128"
    # fp6 to M = 4096 since the split rings (H100 run 64: 0.92-1.00x against dequantize + cuBLAS's 0.91-0.94x)
    assert all([gemm(bits, m) for m in (4096, 4097)] == ["wgmma_256x128", None] for bits in (4, 6))
    # fp8 prefill stays on the CUTLASS GEMM, but for M = 193-256 with few output tiles (M * N <= 2**20), where the
    # 128-row tile's splits add their sums in clusters (run 64, 4096²: 0.90x against 0.79x)
    assert gemm(8, 256) == gemm(8, 193) == "wgmma_128x128" and gemm(8, 256, 8192) is None
    assert all(gemm(8, m) is None for m in (65, 192, 257, 1024, 4096))
    # without it, never; with it, only within the rows above
    for bits in (4, 6, 8):
        for M in (1, 16, 17, 64, 256, 1024, 4096, 16384):
            assert d.choose(bits, M, True, True, True, True, True, False, 4096).backend is not d.Backend.CUDA_GEMM
    assert all(gemm(bits, 16384) is None for bits in (4, 6, 8))
    # not a CUDA device: never (no library is loaded for the answer), and forcing it says why
    monkeypatch.setattr("lowbit_flex.kernels.s8s4_cutlass.library_available", lambda: pytest.fail("loaded"))
    assert not d.cuda_gemm_supported(torch.device("cpu"), 64, 4096, 4)
    x, w = torch.randn(4, 256).bfloat16(), torch.zeros(8, 32, dtype=torch.int32)
    with pytest.raises(ValueError, match="backend: the CUDA WGMMA GEMM needs"):
        d.float_weight_only_linear_cuda(x, w, torch.ones(8), None, 2, 1, backend=d.Backend.CUDA_GEMM,
                                        config="wgmma_16x128")  # fmt: skip


@requires_sm90
def test_unknown_config_and_an_fp8_k_off_16_are_refused():
    from lowbit_flex.kernels import float_weight_dispatch as d

    x = torch.randn(16, 256, device="cuda").bfloat16()
    w4 = torch.zeros(8, 32, dtype=torch.int32, device="cuda")
    with pytest.raises(ValueError, match="config: expected one of"):
        d.float_weight_only_linear_cuda(x, w4, torch.ones(8, device="cuda"), None, 2, 1, backend=d.Backend.CUDA_GEMM,
                                        config="wgmma_1x1")  # fmt: skip
    w8 = torch.zeros(8, 264, device="cuda").to(torch.float8_e4m3fn)  # fp8 rows are TMA rows: K % 16
    with pytest.raises(ValueError, match="K % 16 == 0"):
        d.float_weight_only_linear_cuda(x[:, :1].expand(16, 264).contiguous(), w8, torch.ones(8, device="cuda"), None,
                                        4, 3, backend=d.Backend.CUDA_GEMM, config="wgmma_16x128")  # fmt: skip


@requires_sm90
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("config", list(mod.GEMM_CUDA_CONFIGS))
# M: one row, a partial tile, several row tiles; N: a partial 128-row tile, one and several; K: a partial 128-code
# tile, one tile, many (split into several K ranges where the output tiles are few), a long unsplit row. Splits
# form clusters (sums added through distributed shared memory) where they are at most 8 and fit the GPU at once:
# (1, 9, 144) two, (300, 1000, 1040) five on the 256-row tile (16 output tiles of 9 K tiles: shares of uneven size);
# more splits go through the workspace: (100, 40, 4096) 32.
@pytest.mark.parametrize("m, n, k", [(1, 9, 144), (17, 264, 1040), (100, 40, 4096), (257, 136, 2320),
                                     (33, 1000, 128), (300, 264, 14336), (300, 1000, 1040)])  # fmt: skip
def test_every_config_within_rounding_of_float64(fmt, dtype, config, m, n, k, monkeypatch):
    if fmt.bits == 8 and dtype == torch.float16:
        # e4m3 codes up to 448 times 2 * randn: at K = 4096 two of the 300 x 264 outputs (seed 4396) pass fp16's
        # 65504 and become inf in every config (run 52's failures); at 2048 the largest is 47160
        k = min(k, 2048)
    out, x, w64, s, b = _run(fmt, m, n, k, "cuda_gemm", config, bias=n % 2 == 0, dtype=dtype, seed=m + k,
                             monkeypatch=monkeypatch)  # fmt: skip
    exact, bound = exact_linear(x, w64, s, b)
    assert float(exact.abs().max()) < torch.finfo(dtype).max, "test data: the exact output overflows the dtype"
    assert_within(out, exact, bound)


@requires_sm90
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("config", ["wgmma_16x128", "wgmma_128x128"])
def test_every_code_decodes_exactly(fmt, dtype, config):
    # Row n of w holds code n at column (5 n) % K (every K block and lane position across the rows; the rest zero
    # codes): out = x[:, (5 n) % K] * value(code n), one product, exact in fp32 and rounded once (subnormals, -0 and
    # the largest magnitudes included).
    from lowbit_flex.kernels.float_weight_dispatch import Backend, float_weight_only_linear_cuda

    n_codes, K = 2**fmt.bits, 128
    codes = torch.zeros(n_codes, K, dtype=torch.uint8)
    codes[torch.arange(n_codes), (5 * torch.arange(n_codes)) % K] = torch.arange(n_codes, dtype=torch.uint8)
    w, w64 = weight_of_codes(codes, fmt)  # (e4m3's two NaN codes become their neighbours)
    x = torch.randn(19, K).to(dtype)
    out = float_weight_only_linear_cuda(x.cuda(), w.cuda(), torch.ones(n_codes).cuda(), None, fmt.ebits, fmt.mbits,
                                        backend=Backend.CUDA_GEMM, config=config).cpu()  # fmt: skip
    want = (x.double() @ w64.T).to(dtype)
    assert torch.equal(out, want)


@requires_sm90
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
def test_each_k_position_meets_its_x_column(fmt):
    # One nonzero code per row at column k = row (a permutation check of the plane join and the B descriptor's K
    # steps): out[m, n] = x[m, n] * value, for every k of a 128-code tile and the second tile's first columns.
    from lowbit_flex.kernels.float_weight_dispatch import Backend, float_weight_only_linear_cuda
    from lowbit_flex.quant import from_fpx_bits

    N = K = 256
    one = int(torch.nonzero(from_fpx_bits(torch.arange(2**fmt.bits, dtype=torch.uint8), fmt, torch.float64) == 1)[0])
    codes = torch.zeros(N, K, dtype=torch.uint8)
    codes[torch.arange(N), torch.arange(N)] = one
    w, _ = weight_of_codes(codes, fmt)
    x = torch.randn(24, K).bfloat16()
    out = float_weight_only_linear_cuda(x.cuda(), w.cuda(), torch.ones(N).cuda(), None, fmt.ebits, fmt.mbits,
                                        backend=Backend.CUDA_GEMM, config="wgmma_32x128").cpu()  # fmt: skip
    assert torch.equal(out, x)


@requires_sm90
def test_nan_in_one_row_stays_in_that_row():
    assert_nan_row_stays_in_its_row(FORMATS, "cuda_gemm", ["wgmma_16x128", "wgmma_64x128"], 21)


@requires_sm90
@pytest.mark.parametrize("m, config", [(16, "wgmma_16x128"), (70, "wgmma_128x128")])
def test_the_table_runs_it_from_the_module_eagerly_and_compiled(m, config):
    # fp4 at M = 16 and 70 on an H200 with the CUDA library: the table's rows name the kernel (run 51), and the
    # module's eager fast path (a bound launch, its split-K workspace sized once) and a compiled call (the traced
    # op) give the forced kernel's bits.
    from torch import nn

    from lowbit_flex.kernels import float_weight_dispatch as d
    from lowbit_flex.kernels.arch import register_a_wgmma_pipelines
    from lowbit_flex.nn import FPxWeightOnlyLinear

    lin = nn.Linear(1000, 264, device="cuda", dtype=torch.bfloat16)
    mod = FPxWeightOnlyLinear.from_linear(lin, 2, 1)
    x = torch.randn(m, 1000, device="cuda", dtype=torch.bfloat16)
    dev = x.device
    flags = (
        register_a_wgmma_pipelines(dev, True),
        d.cuda_gemv_supported(dev, m, 1000, 4),
        d.cutlass_gemm_supported(dev, 264, 1000, 4),
        d.gluon_supported(dev),
        d.cuda_gemm_supported(dev, m, 1000, 4),
    )
    rule = d.choose(4, m, True, *flags, 264)
    assert (rule.backend, rule.config) == (d.Backend.CUDA_GEMM, config)
    want = d.float_weight_only_linear_cuda(x, mod.weight, mod.weight_scale, mod.bias, 2, 1,
                                           backend=d.Backend.CUDA_GEMM, config=config)  # fmt: skip
    try:
        eager = mod(x)
        assert torch.equal(mod(x), eager)  # the second call takes the bound launch
        assert torch.equal(eager, want)
        compiled = torch.compile(mod, fullgraph=True)(x)
        assert torch.equal(compiled, want)
    finally:
        torch._dynamo.reset()


@requires_sm90
def test_library_config_names_match():
    assert mod.library_config_names() == tuple(mod.GEMM_CUDA_CONFIGS)
