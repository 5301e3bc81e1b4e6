"""The Hopper group-wise int8 CUTLASS GEMM against the exact float64 definition (sm_90 GPU), and its Python-side
contract: config table vs header, support rules, argument checks, the forced backend in the dispatcher (CPU)."""

import re
from pathlib import Path

import pytest
import torch

from lowbit_flex.kernels import s8s8_groupwise_cutlass as mod
from lowbit_flex.kernels.s8s8_groupwise_cutlass import (
    GROUP_MULT_CONFIGS,
    GROUP_MULT_MAX_K,
    GROUPS,
    GROUPWISE_CONFIGS,
    configs_for_group,
    group_mult_supported,
    supported,
)
from lowbit_flex.testing import assert_fully_written, poison_
from tests.kernels._w4a8_exact import assert_close_to_exact, exact_f64, log_uniform, random_inputs, scale_range

requires_sm90 = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)),
    reason="needs an sm_90 GPU (H100/H200): the kernel is sm_90a WGMMA code with no CPU or interpreter path",
)
HEADER = Path(__file__).resolve().parents[2] / "lowbit_flex/csrc/s8s8_groupwise/s8s8_groupwise_configs.h"
CONFIG_GROUPS = [(c, g) for c, groups in GROUPWISE_CONFIGS.items() for g in groups]
# M from decode-sized to several waves of 128-row tiles; N ragged multiples of 8 (a partial 128/192-wide tile).
MN = [(1, 136), (3, 8), (77, 520), (128, 24), (1000, 264), (4096, 136)]


def fp32_terms(K: int, group: int) -> int:
    """Float32 roundings the kernel makes beyond the output rounding: per group the w_scale product and the add
    into the accumulator (its int32 -> float conversion is exact), then the x_scale product and the bias add."""
    return 2 * (K // group) + 2


def run_poisoned(monkeypatch, *args) -> torch.Tensor:
    """Call the wrapper with every tensor it allocates (output, workspace) poisoned first."""
    real_empty = torch.empty
    with monkeypatch.context() as m:
        m.setattr(mod.torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
        out = mod.s8s8_groupwise_cutlass(*args)
    assert_fully_written(out)
    return out


def check(monkeypatch, M, N, K, group, config, out_dtype, bias=True):
    x, xs, q, ws, b = random_inputs(M, N, K, group, out_dtype, bias)
    dev = lambda t: None if t is None else t.cuda()
    out = run_poisoned(monkeypatch, dev(x), dev(xs), dev(q), dev(ws), dev(b), out_dtype, config)
    assert out.shape == (M, N) and out.dtype == out_dtype
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms(K, group))
    return out


# ---------------------------------------------------------------------------------------------------------- CPU


def test_configs_match_csrc_header():
    """GROUPWISE_CONFIGS then GROUP_MULT_CONFIGS must list the header's configs in the header's order (the launcher
    indexes by position), and each config's groups must follow from its compiled promotion cadence (k-blocks of 32
    per group). Ping-pong configs (two int32 accumulators) have ``_pp`` in their names and promote at K-tile
    boundaries only (cadence 4); integer-multiplier configs end in ``_int``."""
    block = re.search(r"#define LOWBIT_S8S8G_SM90_CONFIGS\(X\)(.*?)(?:\n\n|\Z)", HEADER.read_text(), re.S)
    assert block, f"LOWBIT_S8S8G_SM90_CONFIGS not found in {HEADER}"
    entries = re.findall(r'X\((\d+), "([^"]+)", (\d+), (\d+), (\d+), ([01]), ([01])\)', block.group(1))
    assert len(entries) == block.group(1).count("X(")
    assert [int(e[0]) for e in entries] == list(range(len(entries)))
    assert tuple(e[1] for e in entries) == (*GROUPWISE_CONFIGS, *GROUP_MULT_CONFIGS)
    for _, name, tile_m, tile_n, kblocks, ping_pong, int_mult in entries:
        assert name.startswith(f"{tile_m}x{tile_n}x128_")
        assert ("_pp" in name) == (ping_pong == "1")
        assert name.endswith("_int") == (int_mult == "1") == (name in GROUP_MULT_CONFIGS)
        assert ping_pong == "0" or kblocks == "4"
        expected = tuple(g for g in GROUPS if g % 128 == 0) if kblocks == "4" else (32 * int(kblocks),)
        assert {**GROUPWISE_CONFIGS, **GROUP_MULT_CONFIGS}[name] == expected


def test_every_group_has_a_config():
    assert all(configs_for_group(g) for g in GROUPS)
    assert configs_for_group(128)[0] == "128x128x128_g128" and configs_for_group(96) == ()


@pytest.mark.parametrize(
    "M, N, K, group, expected",
    [(1, 8, 32, 32, True), (4096, 4104, 4096, 128, True), (77, 520, 1280, 256, True), (3, 24, 160, 32, True),
     (0, 8, 128, 128, False), (1, 12, 128, 128, False), (1, 8, 48, 48, False), (1, 8, 384, 256, False),
     (1, 8, 512, 512, False), (1, 8, 192, 96, False), (1, 8, 128, 16, False)],
)  # fmt: skip
def test_supported_by_shape(monkeypatch, M, N, K, group, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert supported(M, N, K, group) is expected


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (10, 0), (12, 0)])
def test_supported_only_on_sm90(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert not supported(128, 128, 1024, 128)


def test_not_supported_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not supported(128, 128, 1024, 128)


def _args(M=4, N=16, K=256, groups=2, **over):
    args = dict(
        x_int8=torch.zeros(M, K, dtype=torch.int8), x_scale=torch.ones(M),
        w_int8_unpacked=torch.zeros(N, K, dtype=torch.int8), w_scale=torch.ones(N, groups),
        bias=None, out_dtype=torch.bfloat16, config="128x128x128_g128",
    )  # fmt: skip
    return args | over


@pytest.mark.parametrize(
    "over, match",
    [(dict(config="256x128x128_coop"), "config"), (dict(out_dtype=torch.float32), "out_dtype"),
     (dict(x_int8=torch.zeros(4, 256)), "int8"), (dict(w_int8_unpacked=torch.zeros(16, 128, dtype=torch.int8)), "w:"),
     (dict(x_scale=torch.ones(5)), "x_scale"), (dict(x_scale=torch.ones(4, dtype=torch.float64)), "x_scale"),
     (dict(w_scale=torch.ones(16)), "w_scale"), (dict(w_scale=torch.ones(16, 3)), "divide"),
     (dict(w_scale=torch.ones(16, 4)), "takes groups"), (dict(config="128x128x128_g32"), "takes groups"),
     (dict(bias=torch.ones(15)), "bias"), (dict(bias=torch.ones(16, dtype=torch.float16)), "bias"),
     ({}, "CUDA device")],
)  # fmt: skip
def test_argument_checks(over, match):
    """Checked on the host before the library is touched (so these run on CPU): the last case is valid except for
    the device."""
    with pytest.raises(ValueError, match=match):
        mod.s8s8_groupwise_cutlass(**_args(**over))


def _mult_args(M=4, N=16, K=256, groups=2, **over):
    args = dict(
        x_int8=torch.zeros(M, K, dtype=torch.int8), x_scale=torch.ones(M),
        w_int8_unpacked=torch.zeros(N, K, dtype=torch.int8), w_mult=torch.ones(N, groups, dtype=torch.int8),
        w_channel_scale=torch.ones(N), bias=None, out_dtype=torch.bfloat16, config="128x128x128_g128_pp_int",
    )  # fmt: skip
    return args | over


@pytest.mark.parametrize(
    "over, match",
    [(dict(config="128x128x128_g128"), "config"), (dict(w_mult=torch.ones(16, 2)), "w_mult"),
     (dict(w_mult=torch.ones(16, 4, dtype=torch.int8)), "takes groups"),
     (dict(w_channel_scale=torch.ones(15)), "w_channel_scale"),
     (dict(w_channel_scale=torch.ones(16, dtype=torch.float64)), "w_channel_scale"),
     (dict(x_int8=torch.zeros(4, 2**14, dtype=torch.int8), w_int8_unpacked=torch.zeros(16, 2**14, dtype=torch.int8),
           w_mult=torch.ones(16, 2**14 // 128, dtype=torch.int8)), "overflow"),
     ({}, "CUDA device")],
)  # fmt: skip
def test_group_mult_argument_checks(over, match):
    """The integer-multiplier wrapper's own checks, on the host (the float configs are not its configs, and K is
    bounded so that the int32 sum cannot overflow); the last case is valid except for the device."""
    with pytest.raises(ValueError, match=match):
        mod.s8s8_group_mult_cutlass(**_mult_args(**over))


def test_group_mult_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert group_mult_supported(1024, 4096, 14336, 128) and group_mult_supported(1, 8, 256, 256)
    assert not group_mult_supported(1024, 4096, GROUP_MULT_MAX_K + 128, 128)  # the int32 sum could overflow
    assert not group_mult_supported(1024, 4096, 4096, 64)  # the integer configs promote per 128-deep K tile
    assert not group_mult_supported(1024, 4100, 4096, 128)  # N % 8
    assert 4096 * 128 * 8 * 128 < 2**31 and GROUP_MULT_MAX_K * 128 * 8 * 128 < 2**31 <= 2**14 * 128 * 8 * 128


def test_dispatch_rows_and_availability():
    from lowbit_flex.kernels.s8s4_dispatch import DISPATCH_TABLE, Arch, Backend, ScaleKind, available

    backend = Backend("cutlass_sm90_groupwise")
    assert backend is Backend.CUTLASS_SM90_GROUPWISE
    rows = [r for r in DISPATCH_TABLE if r.backend is backend]
    # Hopper, group-wise, and only configs this module has (measured: the group-128 family).
    assert rows and all(r.arch is Arch.SM90 and r.scale is ScaleKind.GROUPWISE for r in rows)
    assert all(r.config in GROUPWISE_CONFIGS and 128 in GROUPWISE_CONFIGS[r.config] for r in rows)
    gw, pc = ScaleKind.GROUPWISE, ScaleKind.PER_CHANNEL
    assert not available(backend, Arch.SM90, pc, 1024, 4096, 4096, None)
    assert not available(backend, Arch.SM90, gw, 1024, 4096, 4096, None)  # the group is required
    assert not available(backend, Arch.SM80, gw, 1024, 4096, 4096, 128)
    assert not available(backend, Arch.OTHER, gw, 1024, 4096, 4096, 128)


def test_dispatch_backend_needs_the_library(monkeypatch):
    from lowbit_flex.kernels import s8s4_cutlass
    from lowbit_flex.kernels.s8s4_dispatch import Arch, Backend, ScaleKind, available

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    args = (Backend.CUTLASS_SM90_GROUPWISE, Arch.SM90, ScaleKind.GROUPWISE, 1024, 4096, 4096, 128)
    monkeypatch.setattr(s8s4_cutlass, "library_available", lambda: False)
    assert not available(*args)
    monkeypatch.setattr(s8s4_cutlass, "library_available", lambda: True)
    assert available(*args)
    assert available(*args, "128x192x128_g128")
    assert available(*args, "128x128x128_g128_pp")  # forced only: no dispatch row names it until it is measured
    assert not available(*args, "128x128x128_g64")  # a config takes only the groups its mainloop promotes at


# ---------------------------------------------------------------------------------------------------------- GPU


@requires_sm90
def test_library_exports_the_configs():
    assert mod.library_config_names() == (*GROUPWISE_CONFIGS, *GROUP_MULT_CONFIGS)


@requires_sm90
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("config, group", CONFIG_GROUPS)
@pytest.mark.parametrize("M, N", MN)
def test_matches_exact_reference(monkeypatch, M, N, config, group, out_dtype, bias):
    # 5 groups: a partial last 128-deep K tile for groups 32 and 64, a group spanning two K tiles for 256.
    check(monkeypatch, M, N, 5 * group, group, config, out_dtype, bias)


@requires_sm90
@pytest.mark.parametrize("config", configs_for_group(128))
def test_llm_sized_problem(monkeypatch, config):
    check(monkeypatch, 1000, 4104, 4096, 128, config, torch.bfloat16)


@requires_sm90
@pytest.mark.parametrize("config", configs_for_group(128))
@pytest.mark.parametrize("K, group", [(128, 128), (256, 128), (384, 128), (256, 256), (512, 256)])
def test_few_k_tiles(monkeypatch, config, K, group):
    """One to three groups per tile: a single group (no promotion before the last), and for the ping-pong configs
    the last group in either int32 accumulator. 8 x 33 output tiles: every CTA of the persistent grid runs
    several, so the pipeline state carries across tiles with few K tiles each."""
    check(monkeypatch, 1000, 4104, K, group, config, torch.bfloat16)


@requires_sm90
@pytest.mark.parametrize("config, group", CONFIG_GROUPS)
def test_extreme_integers(monkeypatch, config, group):
    """Every x at -128 and every w at -8: the largest group dot (128 * 8 * group) in every element."""
    M, N, K = 129, 200, 4 * group
    x = torch.full((M, K), -128, dtype=torch.int8)
    q = torch.full((N, K), -8, dtype=torch.int8)
    xs, ws = torch.full((M,), 2.0**-10), torch.full((N, K // group), 2.0**-10)
    out = run_poisoned(monkeypatch, x.cuda(), xs.cuda(), q.cuda(), ws.cuda(), None, torch.bfloat16, config)
    exact, magnitude = exact_f64(x, xs, q, ws, None)
    assert_close_to_exact(out, exact, magnitude, torch.bfloat16, fp32_terms(K, group))


@requires_sm90
@pytest.mark.parametrize("config, group", CONFIG_GROUPS)
def test_no_bias_equals_zero_bias_and_runs_are_deterministic(monkeypatch, config, group):
    x, xs, q, ws = (t.cuda() for t in random_inputs(300, 136, 8 * group, group, torch.bfloat16, bias=False)[:4])
    first = mod.s8s8_groupwise_cutlass(x, xs, q, ws, None, torch.bfloat16, config)
    zero = mod.s8s8_groupwise_cutlass(x, xs, q, ws, torch.zeros(136, device="cuda"), torch.bfloat16, config)
    again = mod.s8s8_groupwise_cutlass(x, xs, q, ws, None, torch.bfloat16, config)
    assert torch.equal(first, zero) and torch.equal(first, again)


@requires_sm90
def test_misaligned_operands_are_copied_not_misread(monkeypatch):
    """x and w views starting one byte into their storage: TMA needs 16-byte aligned bases, the wrapper copies."""
    M, N, K, group = 77, 136, 512, 128
    x, xs, q, ws, b = random_inputs(M, N, K, group, torch.bfloat16)
    xm = torch.empty(M * K + 1, dtype=torch.int8, device="cuda")[1:].view(M, K)
    qm = torch.empty(N * K + 1, dtype=torch.int8, device="cuda")[1:].view(N, K)
    xm.copy_(x), qm.copy_(q)
    out = run_poisoned(monkeypatch, xm, xs.cuda(), qm, ws.cuda(), b.cuda(), torch.bfloat16, "128x128x128_g128")
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out, exact, magnitude, torch.bfloat16, fp32_terms(K, group))


@requires_sm90
@pytest.mark.parametrize("group", GROUPS)
def test_forced_backend_of_the_op(group):
    """``s8s4_linear_cuda(_backend="cutlass_sm90_groupwise")``: packed int4 in, unpacked by Triton, then the kernel
    (default config for the group)."""
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda
    from lowbit_flex.quant import pack_int4

    M, N, K = 1000, 264, 4 * max(group, 128)
    x, xs, q, ws, b = random_inputs(M, N, K, group, torch.bfloat16)
    out = s8s4_linear_cuda(
        x.cuda(), xs.cuda(), pack_int4(q).cuda(), ws.cuda(), b.cuda(), torch.bfloat16, _backend="cutlass_sm90_groupwise"
    )
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out, exact, magnitude, torch.bfloat16, fp32_terms(K, group))


@requires_sm90
def test_forced_backend_rejects_per_channel_scales():
    from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda
    from lowbit_flex.quant import pack_int4

    x, xs, q, ws, _ = random_inputs(256, 128, 512, None, torch.bfloat16)
    with pytest.raises(ValueError, match="cutlass_sm90_groupwise cannot take"):
        s8s4_linear_cuda(
            x.cuda(), xs.cuda(), pack_int4(q).cuda(), ws.cuda(), None, torch.bfloat16, _backend="cutlass_sm90_groupwise"
        )


# Integer group multipliers (the _int configs): an int32 sum of exact group dots times int8 multipliers, then
# x_scale, the channel scale and the bias in float32.
GROUP_MULT_CONFIG_GROUPS = [(c, g) for c, groups in GROUP_MULT_CONFIGS.items() for g in groups]


def check_group_mult(monkeypatch, x, xs, q, mult, channel, b, out_dtype, config):
    """Against the definition in float64: group scales ``channel * mult`` (exact products in float64). The kernel's
    int32 sum is exact; its roundings are the conversion to float, x_scale, the channel scale and the bias."""
    dev = lambda t: None if t is None else t.cuda()
    real_empty = torch.empty
    with monkeypatch.context() as m:
        m.setattr(mod.torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
        out = mod.s8s8_group_mult_cutlass(dev(x), dev(xs), dev(q), dev(mult), dev(channel), dev(b), out_dtype, config)
    assert_fully_written(out)
    assert out.shape == (x.shape[0], q.shape[0]) and out.dtype == out_dtype
    exact, magnitude = exact_f64(x, xs, q, channel.double()[:, None] * mult.double(), b)
    assert_close_to_exact(out, exact, magnitude, out_dtype, 4)
    return out


def random_mult(N, groups):
    """int8 multipliers over their whole range, both extremes present, zero and negatives included."""
    mult = torch.randint(-128, 128, (N, groups), dtype=torch.int8)
    mult.view(-1)[torch.randperm(N * groups)[:2]] = torch.tensor([-128, 127], dtype=torch.int8)
    return mult


def test_exact_reference_bounds_every_term_with_negative_scales():
    """The reference's error bound sums |x q| * |scale| over every term: integer multipliers are negative in about
    half the groups, and a signed sum there shrank the bound below the kernel's float32 roundings (the GPU run 51
    failed these tests on large M)."""
    M, N, K, group = 3, 5, 384, 128
    x, xs, q, _, b = random_inputs(M, N, K, group, torch.bfloat16)
    ws = torch.rand(N, 1, dtype=torch.float64) * random_mult(N, K // group).double()
    assert (ws < 0).any()
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    terms = xs.double()[:, None, None] * x.double()[:, None, :] * q.double() * ws.repeat_interleave(group, 1)
    torch.testing.assert_close(exact, terms.sum(-1) + b.double(), rtol=1e-12, atol=0)
    torch.testing.assert_close(magnitude, terms.abs().sum(-1) + b.double().abs(), rtol=1e-12, atol=0)


@requires_sm90
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("out_dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("config, group", GROUP_MULT_CONFIG_GROUPS)
@pytest.mark.parametrize("M, N", MN)
def test_group_mult_matches_exact_reference(monkeypatch, M, N, config, group, out_dtype, bias):
    K = 5 * group  # an odd number of groups: the last one in either ping-pong accumulator
    x, xs, q, _, b = random_inputs(M, N, K, group, out_dtype, bias)
    channel = log_uniform((N,), *scale_range(out_dtype)) / 128  # |mult| <= 128 on top of the usual scale range
    check_group_mult(monkeypatch, x, xs, q, random_mult(N, K // group), channel, b, out_dtype, config)


@requires_sm90
@pytest.mark.parametrize("config", GROUP_MULT_CONFIGS)
@pytest.mark.parametrize("K", [128, 256, 384, 4096, 14336])
def test_group_mult_llm_sized_and_few_k_tiles(monkeypatch, config, K):
    x, xs, q, _, b = random_inputs(1000, 4104, K, 128, torch.bfloat16)
    channel = log_uniform((4104,), -6.0, 1.0)
    check_group_mult(monkeypatch, x, xs, q, random_mult(4104, K // 128), channel, b, torch.bfloat16, config)


@requires_sm90
@pytest.mark.parametrize("config", GROUP_MULT_CONFIGS)
def test_group_mult_largest_sum_fits_int32(monkeypatch, config):
    """x = -128, w = -8 and every multiplier 127 at the deepest K the wrapper takes: the largest int32 sum."""
    M, N, K = 129, 200, GROUP_MULT_MAX_K - GROUP_MULT_MAX_K % 128
    x = torch.full((M, K), -128, dtype=torch.int8)
    q = torch.full((N, K), -8, dtype=torch.int8)
    mult = torch.full((N, K // 128), 127, dtype=torch.int8)
    xs, channel = torch.full((M,), 2.0**-20), torch.full((N,), 2.0**-10)
    check_group_mult(monkeypatch, x, xs, q, mult, channel, None, torch.bfloat16, config)


@requires_sm90
def test_group_mult_equals_float_scales_of_the_quantizer(monkeypatch):
    """A weight quantized with integer multipliers: the integer kernel and the float group-wise kernel (given the
    exact float products as scales) compute the same function, both within rounding of the definition."""
    from lowbit_flex.quant import group_mult_scales, quantize_int4_weight_group_mult, unpack_int4

    M, N, K = 512, 1024, 4096
    packed, channel, mult = quantize_int4_weight_group_mult(torch.randn(N, K), 128)
    q = unpack_int4(packed)
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    xs = torch.rand(M) * 1e-2
    out_int = check_group_mult(monkeypatch, x, xs, q, mult, channel, None, torch.bfloat16, "128x128x128_g128_pp_int")
    ws = group_mult_scales(channel, mult)
    out_float = mod.s8s8_groupwise_cutlass(x.cuda(), xs.cuda(), q.cuda(), ws.cuda(), None, torch.bfloat16,
                                           "128x128x128_g128_pp")  # fmt: skip
    exact, magnitude = exact_f64(x, xs, q, ws, None)
    assert_close_to_exact(out_float, exact, magnitude, torch.bfloat16, fp32_terms(K, 128))
    assert (out_int.float() - out_float.float()).abs().max() <= 2 * exact.abs().max() * 2**-8
