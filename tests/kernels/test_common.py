"""Shared launch helpers of ``lowbit_flex.kernels.common`` that need no GPU."""

import pytest
import torch

pytest.importorskip("triton")

from lowbit_flex.kernels.common import cached_plan
from lowbit_flex.kernels.quantize_int8_rowwise import _launch_plan


def test_cached_plan_memoises_concrete_shapes_and_keeps_symbolic_ones_symbolic():
    from torch._dynamo.source import ConstantSource
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv

    assert cached_plan(_launch_plan, 8, 64, 64) is cached_plan(_launch_plan, 8, 64, 64)
    # torch.compile(dynamic=True) traces launchers with SymInt sizes: they are unhashable, and specializing the
    # plan on them would recompile per shape. The grid stays an expression of the symbol.
    m = ShapeEnv().create_unspecified_symint_and_symbol(8, ConstantSource("M"), DimDynamic.DYNAMIC)
    plan = cached_plan(_launch_plan, m, 64, 64)
    assert isinstance(plan.grid[0], torch.SymInt) and plan.grid[1:] == (1, 1)


@pytest.mark.parametrize(
    "capability, ptxas, triton, verified, expected",
    [
        ((9, 0), (12, 8), "3.6.0", True, False),  # triton-lang/triton#9433
        ((9, 0), (13, 3), "3.6.0", True, True),
        ((9, 0), (13, 5), "3.6.0", False, False),  # a config never measured right pipelined
        ((9, 0), (13, 4), "3.9.0", True, False),  # a toolchain the configs were not measured with
        ((8, 0), (12, 8), "3.6.0", False, True),  # no WGMMA before sm_90
    ],
)
def test_register_a_wgmma_pipelines_only_where_measured_right(monkeypatch, capability, ptxas, triton, verified,
                                                               expected):  # fmt: skip
    from lowbit_flex.kernels import arch

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr(arch.torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(arch, "_ptxas_version", lambda a: ptxas if a >= 90 else pytest.fail("no ptxas below sm_90"))
    monkeypatch.setattr(arch, "_triton_version", lambda: triton)
    assert arch.register_a_wgmma_pipelines(torch.device("cpu"), verified) is expected


def test_ptxas_version_reads_the_ptxas_triton_runs():
    from lowbit_flex.kernels.arch import _ptxas_version

    version = _ptxas_version(90)
    assert len(version) == 2 and version >= (11, 0)
