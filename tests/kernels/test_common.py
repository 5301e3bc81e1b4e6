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
