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


def test_capability_is_cached_per_device_and_follows_a_patched_reader(monkeypatch):
    from lowbit_flex.kernels import arch

    calls = []
    read = lambda device=None: calls.append(device) or (8, 6)
    monkeypatch.setattr(arch.torch.cuda, "get_device_capability", read)
    dev = torch.device("cuda", 3)  # never touched: the patched reader answers
    assert arch.capability(dev) == (8, 6) and arch.capability(dev) == (8, 6)
    assert len(calls) == 1  # the second call came from the cache
    monkeypatch.setattr(arch.torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert arch.capability(dev) == (9, 0) and arch.has_fp8_mma(dev)  # a new reader is a new key
    assert arch.capability(torch.device("cpu")) == (0, 0)


def test_stream_scratch_reuses_one_buffer_per_stream_and_never_while_capturing(monkeypatch):
    from lowbit_flex.kernels import common

    real_empty = torch.empty
    monkeypatch.setattr(common.torch, "empty", lambda size, dtype, device: real_empty(size, dtype=dtype))
    monkeypatch.setattr(common.torch._C, "_cuda_getDevice", lambda: 0, raising=False)
    capturing = [False]
    monkeypatch.setattr(common.torch._C, "_cuda_isCurrentStreamCapturing", lambda: capturing[0], raising=False)
    scratch = common.StreamScratch()
    a = scratch(256, 128, stream=7)
    assert a.numel() == 256 and scratch(200, 128, stream=7) is a  # kernels on one stream run in order: reuse
    assert scratch(256, 128, stream=8) is not a  # another stream may run at the same time: its own buffer
    b = scratch(1024, 128, stream=7)
    assert b.numel() == 1024 and scratch(512, 128, stream=7) is b  # grown, then reused
    big = scratch(scratch.MAX_KEPT + 1, 128, stream=7)
    assert big is not b and scratch(512, 128, stream=7) is b  # too large to keep for the process: not kept
    capturing[0] = True
    c = scratch(64, 128, stream=7)
    assert c is not b and scratch(64, 128, stream=7) is not c  # a CUDA graph keeps the address it captured
    capturing[0] = False
    import threading

    other = []
    t = threading.Thread(target=lambda: other.append(scratch(512, 128, stream=7)))
    t.start(), t.join()
    assert other[0] is b  # Triton's scratch: written and read within one kernel, threads share it
    per_thread = common.StreamScratch(per_thread=True)
    mine = per_thread(512, 16, stream=7)
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(per_thread(512, 16, stream=7)))
    t.start(), t.join()
    assert per_thread(512, 16, stream=7) is mine and theirs[0] is not mine  # data across launches: one per thread


def test_tma_strides_ok_needs_a_unit_dim_and_16_byte_outer_strides():
    from lowbit_flex.kernels.common import tma_strides_ok

    assert tma_strides_ok((4096 * 64, 64, 1), 2, 2)  # bf16 rows of 128 bytes
    assert tma_strides_ok((1, 32), 0, 1)  # the unit dim may come first (a transposed fp8 v)
    assert not tma_strides_ok((4096 * 64, 64, 2), 2, 2)  # no unit stride
    assert not tma_strides_ok((24 * 20, 20, 1), 2, 2)  # 40-byte rows
    assert tma_strides_ok((24 * 20, 20, 1), 2, 4)  # the same strides in fp32: 80-byte rows


def test_plan_launch_hands_traced_calls_to_its_traced_plan(monkeypatch):
    # A Gluon kernel cannot go through wrap_triton: where only wrap_triton is right (here: CPU tensors, as in a
    # trace's fake ones), a plan with a traced plan launches that one, with the same arguments, and nothing else.
    from lowbit_flex.kernels import common

    calls = []
    traced = lambda *args: calls.append(args)
    monkeypatch.setattr(common, "wrap_triton", lambda k: pytest.fail("wrap_triton called with a traced plan set"))
    plan = common.PlanLaunch(object(), (1,), {}, tensors=1, traced=traced)
    x = torch.ones(3)
    plan(x, 7)
    assert len(calls) == 1 and calls[0][0] is x and calls[0][1] == 7
    assert plan.bind(x, 7) is None  # an eager caller then keeps the op's body, which takes this path
