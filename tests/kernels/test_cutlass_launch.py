"""The ctypes launcher protocol the CUTLASS wrappers share (``lowbit_flex.kernels.cutlass_launch``), on the CPU with
a fake launcher: a workspace query first, then the launch with a workspace of the size asked for."""

import contextlib
import ctypes
import types

import pytest
import torch

from lowbit_flex import cuda_build
from lowbit_flex.kernels import cutlass_launch


@pytest.fixture
def cpu_stream(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: types.SimpleNamespace(cuda_stream=7))


def _fake_launcher(need: int, status: int = 0):
    calls = []

    def fn(*args):
        *problem, workspace, workspace_bytes, query, stream = args
        calls.append((tuple(problem), workspace, workspace_bytes, query is not None, stream))
        if query is not None:
            ctypes.cast(query, ctypes.POINTER(ctypes.c_size_t)).contents.value = need
            return 0
        return status

    return fn, calls


@pytest.mark.parametrize("need", [0, 4096])
def test_queries_then_launches_with_that_workspace(cpu_stream, need):
    fn, calls = _fake_launcher(need)
    cutlass_launch.launch_with_workspace(fn, (3, 1, 11), torch.device("cpu"), "fake")
    (args0, ws0, bytes0, query0, stream0), (args1, ws1, bytes1, query1, stream1) = calls
    assert args0 == args1 == (3, 1, 11) and stream0 == stream1 == 7
    assert query0 and ws0 is None and bytes0 == 0  # the query launches nothing and needs no workspace
    assert not query1 and bytes1 == need and (ws1 is None) == (need == 0)


def test_a_failed_launch_raises(cpu_stream, monkeypatch):
    lib = types.SimpleNamespace(lowbit_status_string=lambda status: b"simulated")
    monkeypatch.setattr(cuda_build, "load", lambda: lib)
    fn, _ = _fake_launcher(16, status=4)
    with pytest.raises(RuntimeError, match="fake failed: simulated"):
        cutlass_launch.launch_with_workspace(fn, (0,), torch.device("cpu"), "fake")


def test_aligned16_copies_only_misaligned_bases():
    t = torch.zeros(64, dtype=torch.int8)
    assert cutlass_launch.aligned16(t) is t
    view = t[1:]
    copy = cutlass_launch.aligned16(view)
    assert copy is not view and copy.data_ptr() % 16 == 0 and torch.equal(copy, view)
