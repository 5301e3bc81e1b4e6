"""The Hopper W4A8 GEMM with int8 group multipliers (``s8s4_group_mult_cutlass``) against the exact float64
definition (sm_90 GPU), and its Python-side contract: config table vs header, support rules (CPU)."""

import re
from pathlib import Path

import pytest
import torch

from lowbit_flex.kernels import s8s4_cutlass as mod
from lowbit_flex.kernels.s8s4_cutlass import GROUP_MULT_CONFIGS, group_mult_supported
from lowbit_flex.quant import pack_int4
from lowbit_flex.quant.int4 import GROUP_MULT_INT8_MAX
from lowbit_flex.testing import assert_fully_written, poison_
from tests.kernels._w4a8_exact import assert_close_to_exact, exact_f64, random_inputs

requires_sm90 = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)),
    reason="needs an sm_90 GPU (H100/H200): the kernel is sm_90a WGMMA code with no CPU or interpreter path",
)
HEADER = Path(__file__).resolve().parents[2] / "lowbit_flex" / "csrc" / "s8s4_gemm" / "s8s4_configs.h"
# The kernel's float32 roundings beyond the output's: the int32 sum to float, x_scale, the channel scale, the bias.
FP32_TERMS = 4


def random_mult(N: int, groups: int) -> torch.Tensor:
    """Multipliers over the kernel's range [0, 16], both extremes present."""
    mult = torch.randint(0, GROUP_MULT_INT8_MAX + 1, (N, groups), dtype=torch.int8)
    mult.view(-1)[torch.randperm(N * groups)[:2]] = torch.tensor([0, GROUP_MULT_INT8_MAX], dtype=torch.int8)
    return mult


def check(monkeypatch, x, xs, q, mult, channel, b, out_dtype, config) -> torch.Tensor:
    """Run into a poisoned output (and workspace), check every element was written, and compare with the definition
    in float64: group scales ``channel * mult`` (exact products in float64)."""
    dev = lambda t: None if t is None else t.cuda()
    real_empty = torch.empty
    with monkeypatch.context() as m:
        m.setattr(mod.torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
        out = mod.s8s4_group_mult_cutlass(
            dev(x), dev(xs), dev(pack_int4(q)), dev(channel), dev(mult.t().contiguous()), dev(b), out_dtype, config
        )
    assert_fully_written(out)
    assert out.shape == (x.shape[0], q.shape[0]) and out.dtype == out_dtype
    exact, magnitude = exact_f64(x, xs, q, channel.double()[:, None] * mult.double(), b)
    assert_close_to_exact(out, exact, magnitude, out_dtype, FP32_TERMS)
    return out


# ---------------------------------------------------------------------------------------------------------- CPU


def test_configs_match_csrc_header():
    """GROUP_MULT_CONFIGS lists the header's configs in the header's order (the launcher indexes by position)."""
    block = re.search(r"#define LOWBIT_S8S4_SM90_MULT_CONFIGS\(X\)(.*?)(?:\n\n|\Z)", HEADER.read_text(), re.S)
    assert block, f"LOWBIT_S8S4_SM90_MULT_CONFIGS not found in {HEADER}"
    entries = re.findall(r'X\((\d+), "([^"]+)"', block.group(1))
    assert [int(i) for i, _ in entries] == list(range(len(entries)))
    assert tuple(name for _, name in entries) == GROUP_MULT_CONFIGS


@pytest.mark.parametrize(
    "M, N, K, group, expected",
    [(1, 16, 128, 128, True), (4096, 14336, 4096, 128, True), (3, 272, 768, 256, True),
     (1, 8, 128, 128, False),   # N % 16: the multipliers' TMA rows
     (1, 16, 128, 64, False),   # a group shorter than the 128-deep K tile
     (1, 16, 384, 256, False),  # K not a multiple of the group
     (1, 16, 2**17, 128, False)],  # past the exact int32 sum
)  # fmt: skip
def test_supported_by_shape(monkeypatch, M, N, K, group, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert group_mult_supported(M, N, K, group) is expected


@pytest.mark.parametrize("capability", [(8, 0), (8, 9), (10, 0)])
def test_supported_on_compute_9_0_only(monkeypatch, capability):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    assert not group_mult_supported(16, 128, 1024, 128)


def test_int8_products_of_every_code_and_multiplier():
    """What the kernel's upcast relies on: every int4 code times every multiplier in [0, 16] is an int8."""
    codes = torch.arange(-8, 8, dtype=torch.int64)[:, None]
    mults = torch.arange(0, GROUP_MULT_INT8_MAX + 1, dtype=torch.int64)[None, :]
    products = codes * mults
    assert products.min() == -128 and products.max() <= 127
    assert torch.equal(products.to(torch.int8).long(), products)


# ---------------------------------------------------------------------------------------------------------- GPU


@requires_sm90
def test_library_exports_the_configs():
    assert mod.library_config_names("sm90_mult") == GROUP_MULT_CONFIGS


# M from one row to several waves of tiles; N ragged multiples of 16; K of one to 32 K tiles.
SHAPES = [(1, 16, 128), (2, 144, 256), (3, 272, 768), (7, 4112, 4096), (16, 528, 1024), (17, 144, 256),
          (33, 272, 4096), (300, 1040, 2048), (4096, 144, 1024)]  # fmt: skip


@requires_sm90
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group", [128, 256])
@pytest.mark.parametrize("config", GROUP_MULT_CONFIGS)
@pytest.mark.parametrize("M, N, K", SHAPES)
def test_matches_exact_reference(monkeypatch, M, N, K, config, group, out_dtype):
    if K % group:
        pytest.skip(f"K={K} is not a multiple of group {group}")
    x, xs, q, channel, b = random_inputs(M, N, K, None, out_dtype)  # scales log-uniform over the dtype's range
    check(monkeypatch, x, xs, q, random_mult(N, K // group), channel, b, out_dtype, config)


@requires_sm90
@pytest.mark.parametrize("config", GROUP_MULT_CONFIGS)
def test_largest_int32_sum(monkeypatch, config):
    """x = -128, codes -8, multipliers 16 over the deepest K the wrapper takes: every product is 2**14 and the sum
    K * 2**14 = 2**31 - 2**21 is just below 2**31 (and exact in float32)."""
    M, N, K = 3, 32, 2**17 - 128
    assert group_mult_supported(M, N, K, 128) and not group_mult_supported(M, N, K + 128, 128)
    x = torch.full((M, K), -128, dtype=torch.int8)
    q = torch.full((N, K), -8, dtype=torch.int8)
    mult = torch.full((N, K // 128), GROUP_MULT_INT8_MAX, dtype=torch.int8)
    xs, channel = torch.full((M,), 2.0**-20), torch.full((N,), 2.0**-12)
    out = check(monkeypatch, x, xs, q, mult, channel, None, torch.bfloat16, config)
    expected = torch.tensor(K * 2**14 * 2.0**-32).bfloat16()  # the one rounding: to bf16
    assert out.unique().tolist() == [expected.item()]


@requires_sm90
@pytest.mark.parametrize("config", GROUP_MULT_CONFIGS)
def test_quantizer_weights_match_the_float_group_wise_op(config):
    """A weight quantized with multipliers <= 16: the kernel and the op on the exact float group scales compute the
    same function (both within rounding of the definition)."""
    from lowbit_flex.quant import group_mult_scales, quantize_int4_weight_group_mult, unpack_int4

    M, N, K = 257, 1024, 2048
    packed, channel, mult = quantize_int4_weight_group_mult(torch.randn(N, K), 128, max_mult=GROUP_MULT_INT8_MAX)
    assert int(mult.max()) == GROUP_MULT_INT8_MAX and int(mult.min()) >= 1
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    xs = torch.rand(M) * 1e-2
    ws = group_mult_scales(channel, mult)
    out = mod.s8s4_group_mult_cutlass(
        x.cuda(), xs.cuda(), packed.cuda(), channel.cuda(), mult.t().contiguous().cuda(), None, torch.bfloat16, config
    )
    exact, magnitude = exact_f64(x, xs, unpack_int4(packed), ws, None)
    assert_close_to_exact(out, exact, magnitude, torch.bfloat16, FP32_TERMS)
    op = torch.ops.lowbit.s8s4_linear(x.cuda(), xs.cuda(), packed.cuda(), ws.cuda(), None, torch.bfloat16)
    assert (out.float() - op.float()).abs().max() <= 2 * exact.abs().max() * 2**-8


@requires_sm90
def test_misaligned_operands_are_copied_not_misread(monkeypatch):
    M, N, K, group = 5, 48, 256, 128
    x, xs, q, channel, b = random_inputs(M, N, K, None, torch.float16)
    mult = random_mult(N, K // group)
    w = pack_int4(q).cuda()
    w_off = torch.empty(w.numel() + 1, dtype=torch.int8, device="cuda")[1:].view_as(w).copy_(w)
    m_t = mult.t().contiguous().cuda()
    m_off = torch.empty(m_t.numel() + 1, dtype=torch.int8, device="cuda")[1:].view_as(m_t).copy_(m_t)
    assert w_off.data_ptr() % 16 and m_off.data_ptr() % 16
    out = mod.s8s4_group_mult_cutlass(
        x.cuda(), xs.cuda(), w_off, channel.cuda(), m_off, b.cuda(), torch.float16, GROUP_MULT_CONFIGS[0]
    )
    exact, magnitude = exact_f64(x, xs, q, channel.double()[:, None] * mult.double(), b)
    assert_close_to_exact(out, exact, magnitude, torch.float16, FP32_TERMS)
