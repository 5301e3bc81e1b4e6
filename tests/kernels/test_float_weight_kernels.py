"""Every backend and config of the fp8 / fp6 / fp4 weight-only dispatch against float64 (CUDA or the interpreter).

Outputs (and split-K partials) are poisoned first; every element must be written. Codes cover every value of the
format (subnormals, -0, the largest), K and N are ragged, bias on and off.
"""

import pytest
import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.quant import (
    E2M1_FN,
    E2M3_FN,
    E3M2_FN,
    E4M3FN,
    from_fpx_bits,
    pack_fpx_tiles,
    tile_words_per_row,
    to_fpx_bits,
)
from lowbit_flex.testing import assert_fully_written, kernel_device, poison_
from tests.ops._weight_only_reference import assert_within, exact_linear

pytestmark = pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")
FORMATS = [E4M3FN, E3M2_FN, E2M3_FN, E2M1_FN]


def weight_of_codes(codes, fmt):
    """(the kernels' weight, its float64 values) for ``(N, K)`` uint8 codes: e4m3 bytes, or fp4 / fp6 codes packed
    in the tile layout. e4m3's NaN codes (0x7F / 0xFF; it has no inf) become their neighbours: the weight-only ops
    take finite weights only."""
    if fmt.bits == 8:
        w = torch.where((codes & 0x7F) == 0x7F, codes ^ 1, codes).view(torch.float8_e4m3fn)
        return w, w.double()
    return pack_fpx_tiles(codes, fmt.bits), from_fpx_bits(codes, fmt, torch.float64)


def _weight(fmt, n, k, gen):
    return weight_of_codes(torch.randint(0, 2**fmt.bits, (n, k), dtype=torch.uint8, generator=gen), fmt)


def _run(fmt, m, n, k, backend, config, *, bias=True, dtype=torch.bfloat16, seed=0, monkeypatch=None):
    from lowbit_flex.kernels import float_weight_dispatch as d

    gen = torch.Generator().manual_seed(seed)
    dev = kernel_device()
    x = (torch.randn(m, k, generator=gen) * 2).to(dtype)
    w, w64 = _weight(fmt, n, k, gen)
    s = torch.rand(n, generator=gen) + 0.25
    b = torch.randn(n, generator=gen).to(dtype) if bias else None
    if monkeypatch is not None:  # poison every buffer the launcher allocates (the output, split-K partials)
        real_empty = torch.empty
        monkeypatch.setattr(d.torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))
    be = None if backend is None else d.Backend(backend)
    out = d.float_weight_only_linear_cuda(
        x.to(dev), w.to(dev), s.to(dev), None if b is None else b.to(dev), fmt.ebits, fmt.mbits, backend=be,
        config=config,
    )  # fmt: skip
    if monkeypatch is not None:
        monkeypatch.undo()
    assert out.shape == (m, n) and out.dtype == dtype
    assert_fully_written(out)
    return out, x, w64, s, b


def assert_nan_row_stays_in_its_row(fmts, backend, configs, m, seed=3):
    """A NaN in row 4 of a bf16 ``x (m, 256)``: that output row is all NaN and no other row has one, for each format
    and forced config (NaN in one row must not spread)."""
    from lowbit_flex.kernels import float_weight_dispatch as d

    gen = torch.Generator().manual_seed(seed)
    dev = kernel_device()
    for fmt in fmts:
        w, _ = _weight(fmt, 40, 256, gen)
        x = torch.randn(m, 256, generator=gen).bfloat16()
        x[4, 9] = float("nan")
        for config in configs:
            s = torch.ones(40, device=dev)
            out = d.float_weight_only_linear_cuda(x.to(dev), w.to(dev), s, None, fmt.ebits, fmt.mbits,
                                                  backend=d.Backend(backend), config=config).cpu()  # fmt: skip
            assert torch.isnan(out[4]).all() and not torch.isnan(out[torch.arange(m) != 4]).any(), (fmt, config)


def _rounded_weight(w64, s, fmt):
    """The DEQUANT_MM path's weight: ``decode(w) * s`` rounded to bf16 once (by the dequantize kernel, which
    ``test_dequantize_then_cublas_equals_linear_with_the_rounded_weight`` checks against the exact product; the
    interpreter truncates where GPUs round), and unit scales."""
    from lowbit_flex.kernels.float_weight_dispatch import dequantize_weight

    dev = kernel_device()
    if fmt.bits == 8:
        w = w64.to(torch.float8_e4m3fn)
    else:
        w = pack_fpx_tiles(to_fpx_bits(w64, fmt), fmt.bits)
    wd = dequantize_weight(w.to(dev), s.to(dev), w64.shape[1], fmt.ebits, fmt.mbits, torch.bfloat16)
    return wd.cpu().double(), torch.ones_like(s)


def _gluon_here() -> bool:
    """Whether the Gluon kernel itself runs here (sm_90); elsewhere (the interpreter) its configs run the Triton tile
    they fall back to where only ``wrap_triton`` may launch."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


def _plans():
    from lowbit_flex.kernels.float_weight_gemv import GEMV_CONFIGS
    from lowbit_flex.kernels.float_weight_only_linear import DOT_CONFIGS
    from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS
    from lowbit_flex.kernels.float_weight_tma import TMA_CONFIGS

    plans = [("gemv", c, m) for c in GEMV_CONFIGS for m in (1, 3)]
    plans += [("dot", c, 5 if cfg.block_m == 16 else 40) for c, cfg in DOT_CONFIGS.items()]
    # TMA: a partial row tile, and (M = 70 > 64) a second one
    plans += [("tma", c, 70 if cfg.block_m == 64 else 40) for c, cfg in TMA_CONFIGS.items()]
    plans += [("gluon", c, 70 if cfg.block_m == 64 else 140) for c, cfg in GLUON_CONFIGS.items()]
    return plans


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("backend, config, m", _plans())
# K = 300: a partial last tile (zero-padded codes, masked activations); K = 512: whole tiles, several K steps
@pytest.mark.parametrize("n, k", [(40, 300), (20, 512)])
def test_every_config_within_rounding_of_float64(fmt, backend, config, m, n, k, monkeypatch):
    if backend == "gluon" and fmt.bits == 8:
        pytest.skip("the Gluon kernel takes fp4 / fp6 codes")
    if backend in ("tma", "gluon") and k == 300:
        k = 304  # TMA reads 16-byte aligned rows only; 304 still ends in a partial 128-code tile
    out, x, w64, s, b = _run(fmt, m, n, k, backend, config, bias=n == 40, monkeypatch=monkeypatch)
    exact, bound = exact_linear(x, w64, s, b)
    assert_within(out, exact, bound)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dequantize_then_cublas_equals_linear_with_the_rounded_weight(fmt, dtype):
    # The prefill path rounds decode(w) * scale to x's dtype once, then multiplies: nn.Linear with that weight.
    from lowbit_flex.kernels import float_weight_dispatch as d

    gen = torch.Generator().manual_seed(1)
    dev = kernel_device()
    w, w64 = _weight(fmt, 24, 200, gen)
    s = torch.rand(24, generator=gen) + 0.25
    x = torch.randn(17, 200, generator=gen).to(dtype)
    b = torch.randn(24, generator=gen).to(dtype)
    w, s = w.to(dev), s.to(dev)
    wd = d.dequantize_weight(w, s, 200, fmt.ebits, fmt.mbits, dtype)
    assert wd.shape == (24, 200) and wd.dtype == dtype and wd.is_contiguous()
    # One rounding of the exact product: within one ulp (the interpreter truncates where GPUs round to nearest).
    want = w64 * s.cpu().double()[:, None]
    torch.testing.assert_close(wd.cpu().double(), want, rtol=torch.finfo(dtype).eps, atol=0)
    be = d.Backend.DEQUANT_MM
    out = d.float_weight_only_linear_cuda(x.to(dev), w, s, b.to(dev), fmt.ebits, fmt.mbits, backend=be)
    exact, bound = exact_linear(x, wd.cpu().double(), torch.ones(24), b)
    assert_within(out, exact, bound)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("m", [1, 2, 5, 16, 17, 64, 300])
def test_dispatch_default_at_every_m_bucket(fmt, m, monkeypatch):
    from lowbit_flex.kernels.float_weight_dispatch import Backend, table_rule

    out, x, w64, s, b = _run(fmt, m, 36, 136, None, None, seed=m, monkeypatch=monkeypatch)
    # K = 136: fp8 rows of 136 bytes are not TMA-aligned (the table's next rule runs), fp4 / fp6 words are
    w_row = 136 if fmt.bits == 8 else tile_words_per_row(136, fmt.bits) * 4
    # the route's own rule: with every backend this device and the CUDA library run
    if table_rule(torch.device(kernel_device()), fmt.bits, m, 36, 136, w_row % 16 == 0).backend is Backend.DEQUANT_MM:
        w64, s = _rounded_weight(w64, s, fmt)
    exact, bound = exact_linear(x, w64, s, b)
    assert_within(out, exact, bound)


def test_fp8_bit_decode_path_for_gpus_without_e4m3_conversion(monkeypatch):
    # sm_80 decodes e4m3 with bit operations (from a uint8 view); the interpreter takes that path when told to.
    from lowbit_flex.kernels import float_weight_dispatch as d

    monkeypatch.setattr(d, "fp8_native_supported", lambda device: False)
    d._route.cache_clear()  # routes are cached per shape with the decode form they chose
    for backend, config, m in (("gemv", "gemv_4x4x8", 2), ("dot", "dot_16x128x1_swap", 7), ("dequant_mm", "", 20)):
        out, x, w64, s, b = _run(E4M3FN, m, 24, 264, backend, config, seed=m)
        if backend == "dequant_mm":
            w64, s = _rounded_weight(w64, s, E4M3FN)
        exact, bound = exact_linear(x, w64, s, b)
        assert_within(out, exact, bound)
    d._route.cache_clear()


def test_nan_in_one_row_stays_in_that_row():
    from lowbit_flex.kernels import float_weight_dispatch as d

    gen = torch.Generator().manual_seed(2)
    w, _ = _weight(E2M1_FN, 24, 256, gen)
    x = torch.randn(3, 256, generator=gen).bfloat16()
    x[1, 7] = float("nan")
    dev = kernel_device()
    plans = ((d.Backend.GEMV, "gemv_4x4x8"), (d.Backend.DOT, "dot_16x64x2"), (d.Backend.TMA, "tma_16x128x1_swap"),
             (d.Backend.GLUON, "gluon_64x64"))  # fmt: skip
    for backend, config in plans:
        out = d.float_weight_only_linear_cuda(x.to(dev), w.to(dev), torch.ones(24, device=dev), None, 2, 1,
                                              backend=backend, config=config).cpu()  # fmt: skip
        assert torch.isnan(out[1]).all() and not torch.isnan(out[[0, 2]]).any()


def test_strided_scale_and_bias_views_give_the_contiguous_result():
    # w_scale[::2] and bias[::2] pass the op's checks; every kernel reads them with unit stride, so the dispatch makes
    # them contiguous first (they gave the wrong channels' scales before)
    from lowbit_flex.kernels import float_weight_dispatch as d

    gen = torch.Generator().manual_seed(4)
    dev = kernel_device()
    w, _ = _weight(E4M3FN, 24, 256, gen)
    x = torch.randn(3, 256, generator=gen).bfloat16().to(dev)  # (the GEMV takes up to 4 rows)
    s2, b2 = (torch.rand(48, generator=gen) + 0.5).to(dev), torch.randn(48, generator=gen).bfloat16().to(dev)
    for backend, config in ((d.Backend.DOT, "dot_16x64x2"), (d.Backend.GEMV, "gemv_4x4x8")):
        run = lambda s, b, be=backend, c=config: d.float_weight_only_linear_cuda(x, w.to(dev), s, b, 4, 3, backend=be,
                                                                                 config=c)  # fmt: skip
        assert torch.equal(run(s2[::2], b2[::2]), run(s2[::2].contiguous(), b2[::2].contiguous())), backend


def test_dispatch_table_names_real_configs():
    from lowbit_flex.kernels.float_weight_dispatch import DISPATCH_TABLE, Backend, choose
    from lowbit_flex.kernels.float_weight_gemm_cuda import GEMM_CUDA_CONFIGS
    from lowbit_flex.kernels.float_weight_gemv import GEMV_CONFIGS, GEMV_MAX_M
    from lowbit_flex.kernels.float_weight_gemv_cuda import GEMV_CUDA_CONFIGS, MAX_M
    from lowbit_flex.kernels.float_weight_only_linear import DOT_CONFIGS
    from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS
    from lowbit_flex.kernels.float_weight_tma import TMA_CONFIGS

    for rule in DISPATCH_TABLE:
        if rule.backend is Backend.CUDA_GEMV:  # its config goes by N (test_float_weight_gemv_cuda.py)
            assert rule.config in ("", *GEMV_CUDA_CONFIGS) and rule.max_m <= MAX_M
        elif rule.backend is Backend.GEMV:
            assert rule.config in GEMV_CONFIGS and rule.max_m <= GEMV_MAX_M
        elif rule.backend is Backend.DOT:
            assert rule.config in DOT_CONFIGS
        elif rule.backend is Backend.TMA:
            assert rule.config in TMA_CONFIGS
        elif rule.backend is Backend.GLUON:
            assert rule.config in GLUON_CONFIGS and 8 not in rule.bits
        elif rule.backend is Backend.CUDA_GEMM:
            assert rule.config in GEMM_CUDA_CONFIGS  # every format (fp8 rows: e4m3 bytes)
    assert DISPATCH_TABLE[-1].max_m is None  # the last rule takes every M
    for bits in (4, 6, 8):
        ms = [1, 2, 4, 5, 16, 17, 64, 65, 1024, 4096, 10**6]
        assert all(choose(bits, m).backend is not Backend.GEMV or m <= GEMV_MAX_M for m in ms)
        # where TMA cannot run (before sm_90, unaligned rows) the table still has a rule for every M
        assert all(choose(bits, m, tma=False).backend is not Backend.TMA for m in ms)
        # the Gluon kernel needs sm_90 and the TMA layouts
        assert all(choose(bits, m).backend is not Backend.GLUON for m in ms)
        assert all(choose(bits, m, tma=False, gluon=True).backend is not Backend.GLUON for m in ms)
        # without the CUDA library (or before sm_90) the Triton rules take every M
        assert all(choose(bits, m).backend not in (Backend.CUDA_GEMV, Backend.CUDA_GEMM) for m in ms)
        assert all(choose(bits, m, cuda_gemv=True).backend is not Backend.CUDA_GEMV or m <= MAX_M for m in ms)
        # with a ptxas that would corrupt pipelined WGMMAs, only the rules measured serialized apply
        assert not any(choose(bits, m, pipelined=False).pipelined for m in ms)
    assert choose(8, 64).config == "tma_64x128x1_swap" and choose(8, 64, pipelined=False).config == "dot_16x64x2"
    for rule in DISPATCH_TABLE:  # a pipelined rule's config must be one measured right pipelined
        configs = {Backend.DOT: DOT_CONFIGS, Backend.TMA: TMA_CONFIGS}.get(rule.backend, {})
        assert not rule.pipelined or configs[rule.config].wgmma_pipelined


def test_tma_needs_aligned_rows_else_the_next_rule_runs(monkeypatch):
    # K = 300: x rows of 600 bytes and fp8 rows of 300 bytes are not 16-byte multiples (TMA's rule)
    from lowbit_flex.kernels import float_weight_dispatch as d

    dev = kernel_device()
    x = torch.randn(64, 300).bfloat16().to(dev)
    w = torch.randn(24, 300).to(torch.float8_e4m3fn).to(dev)
    with pytest.raises(ValueError, match="backend: the TMA kernel needs"):
        d.float_weight_only_linear_cuda(x, w, torch.ones(24, device=dev), None, 4, 3, backend=d.Backend.TMA,
                                        config="tma_64x128x1_swap")  # fmt: skip
    out, x, w64, s, b = _run(E2M1_FN, 64, 24, 300, None, None, seed=5, monkeypatch=monkeypatch)
    assert not d.tma_supported(torch.device(dev), 4, 300, 2, 48, True)  # x rows unaligned: the fp4 DOT rule ran
    exact, bound = exact_linear(x, w64, s, b)
    assert_within(out, exact, bound)


def _tensor_core_plans():
    from lowbit_flex.kernels.float_weight_only_linear import DOT_CONFIGS
    from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS
    from lowbit_flex.kernels.float_weight_tma import TMA_CONFIGS

    tma = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (9, 0)
    plans = [("dot", c) for c in DOT_CONFIGS] + ([("tma", c) for c in TMA_CONFIGS] if tma else [])
    return plans + ([("gluon", c) for c in GLUON_CONFIGS] if _gluon_here() else [])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="many K steps per program: too slow for the interpreter")
@pytest.mark.parametrize("fmt", [E4M3FN, E3M2_FN, E2M1_FN], ids=str)
@pytest.mark.parametrize("backend, config", _tensor_core_plans())
def test_long_k_loops_with_several_row_tiles(fmt, backend, config, monkeypatch):
    # What the small shapes above miss: 32 K steps per program (K unsplit) and several row tiles. With the WGMMAs
    # pipelined, the TMA tiles returned NaN or 3-10x the bound on such loops (kernels.arch.register_a_wgmma_pipelines).
    from dataclasses import replace

    from lowbit_flex.kernels.float_weight_only_linear import DOT_CONFIGS
    from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS
    from lowbit_flex.kernels.float_weight_tma import TMA_CONFIGS

    if backend == "gluon" and fmt.bits == 8:
        pytest.skip("the Gluon kernel takes fp4 / fp6 codes")
    unsplit = replace({"dot": DOT_CONFIGS, "tma": TMA_CONFIGS, "gluon": GLUON_CONFIGS}[backend][config], split_k=1)
    out, x, w64, s, b = _run(fmt, 200, 256, 4096, backend, unsplit, seed=9, monkeypatch=monkeypatch)
    exact, bound = exact_linear(x, w64, s, b)
    assert_within(out, exact, bound)


@pytest.mark.parametrize("fmt", [E3M2_FN, E2M3_FN, E2M1_FN], ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("split_k", [1, 3])
def test_gluon_kernel_both_dtypes_split_and_unsplit(fmt, dtype, split_k, monkeypatch):
    # fp16 x decodes to fp16 (the power of two in the epilogue), bf16 x straight to bf16 (its own PTX); K split in
    # three (partials reduced by the split-K kernel) or not at all; two row tiles, ragged N and K.
    from dataclasses import replace

    from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS

    config = replace(GLUON_CONFIGS["gluon_64x64"], split_k=split_k)
    out, x, w64, s, b = _run(fmt, 100, 72, 1296, "gluon", config, dtype=dtype, seed=11, monkeypatch=monkeypatch)
    exact, bound = exact_linear(x, w64, s, b)
    assert_within(out, exact, bound)


def test_gluon_backend_rejects_fp8_codes_and_unknown_configs():
    from lowbit_flex.kernels import float_weight_dispatch as d

    dev = kernel_device()
    x = torch.randn(64, 256).bfloat16().to(dev)
    w8 = torch.randn(32, 256).to(torch.float8_e4m3fn).to(dev)
    with pytest.raises(ValueError, match="backend: the Gluon kernel needs fp4 / fp6 codes"):
        d.float_weight_only_linear_cuda(x, w8, torch.ones(32, device=dev), None, 4, 3, backend=d.Backend.GLUON,
                                        config="gluon_64x64")  # fmt: skip
    w4, _ = _weight(E2M1_FN, 32, 256, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="config: expected one of"):
        d.float_weight_only_linear_cuda(x, w4.to(dev), torch.ones(32, device=dev), None, 2, 1, backend=d.Backend.GLUON,
                                        config="gluon_1x1")  # fmt: skip
