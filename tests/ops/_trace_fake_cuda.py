"""Trace every ``lowbit`` triton_op's CUDA path under ``torch.compile(fullgraph=True)`` on a machine without a GPU.

Run by ``tests/ops/test_triton_ops_trace.py`` as ``python -m tests.ops._trace_fake_cuda ARCH [--dynamic] OP...``
in a process where ``TRITON_INTERPRET`` is unset: an interpreted kernel cannot be wrapped for tracing
(``wrap_triton`` hands it back as it is, and it would run on fake tensors). One process per architecture, since the
dispatch caches its decisions per device, not per capability. Prints one JSON line per (op, sample).

The op's samples (``tests/ops/_samples.py``) become fake CUDA tensors with the same shapes and strides; a CPU-only
torch build makes those without a driver. ``torch.compile`` with an AOTAutograd backend that only records the
forward graph traces them, the way Inductor would see them. What a GPU would answer is stubbed: the compute
capability and SM count the launchers read (sm_90 and sm_80), and the Triton target that torch's mutation analysis
lowers each kernel for (it compiles each kernel to TTIR: a kernel that fails there fails here).

One thing a CPU-only build cannot trace: the tensor methods that copy a fake CUDA tensor (``.contiguous()`` of a
non-contiguous input, ``Tensor.copy_``) fail there before the fake mode sees them ("PyTorch is not linked with
support for cuda devices": the CUDA device guard such a build lacks; ``torch.ops.aten.copy_`` itself traces). A
sample that fails only that way is traced again with contiguous inputs and marked ``contiguous_retry``; its strides
are then checked on a GPU (and on CPU by opcheck).
"""

from __future__ import annotations

import json
import sys
import traceback
from types import SimpleNamespace
from unittest import mock

import torch
import triton
from torch._dynamo.backends.common import aot_autograd
from torch._higher_order_ops.triton_kernel_wrap import (
    kernel_side_table,
    triton_kernel_wrapper_functional,
    triton_kernel_wrapper_mutation,
)
from torch._subclasses.fake_tensor import FakeTensorMode
from triton.backends.compiler import GPUTarget

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from tests.ops._samples import SAMPLES

_NO_CUDA_GUARD = "PyTorch is not linked with support for cuda devices"
_KERNEL_WRAPPERS = (triton_kernel_wrapper_functional, triton_kernel_wrapper_mutation)


def _meta(outs) -> list:
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    return [[list(o.shape), str(o.dtype), list(o.stride())] for o in outs]


def on_gpu(arch: int) -> list:
    """Patches standing in for what the launchers and torch's kernel analysis would ask a GPU of ``sm_<arch>``."""
    cap = divmod(arch, 10)
    props = SimpleNamespace(major=cap[0], minor=cap[1], multi_processor_count=132, name=f"stub sm_{arch}")
    driver = SimpleNamespace(get_current_target=lambda: GPUTarget("cuda", arch, 32))
    return [
        mock.patch("torch.cuda.get_device_capability", lambda device=None: cap),
        mock.patch("torch.cuda.get_device_properties", lambda device=None: props),
        mock.patch.object(triton.runtime.driver, "_active", driver),
    ]


def _graph_input(node: torch.fx.Node) -> bool:
    """Whether ``node`` is a graph input, or a view of one."""
    while node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload) and node.target.is_view:
        node = node.args[0]
    return node.op == "placeholder"


def trace(name: str, args: tuple, kwargs: dict, dynamic: bool) -> dict:
    op = getattr(torch.ops.lowbit, name).default
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm

    mode = FakeTensorMode()
    to_fake = lambda t: (
        torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cuda") if isinstance(t, torch.Tensor) else t
    )
    with mode:
        fargs = tuple(to_fake(a) for a in args)
        fkwargs = {k: to_fake(v) for k, v in kwargs.items()}
    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=record)
    compiled = torch.compile(lambda *a: op(*a, **fkwargs), backend=backend, fullgraph=True, dynamic=dynamic)
    with mode:  # the recorded graph then runs on fake tensors too
        out = compiled(*fargs)
    (gm,) = graphs
    calls = [n for n in gm.graph.nodes if n.op == "call_function"]
    wrappers = [n for n in calls if n.target in _KERNEL_WRAPPERS]
    kernels = [kernel_side_table.get_kernel(n.kwargs["kernel_idx"]) for n in wrappers]
    # The functional wrapper clones what torch's analysis of the kernel (its TTIR) finds written; where that
    # analysis fails it assumes every argument is written, and compiled code would copy the op's inputs per call.
    cloned = [
        f"{getattr(k, 'fn', k).__name__}.{arg}"
        for n, k in zip(wrappers, kernels)
        for arg in n.kwargs.get("tensors_to_clone", ())
        if isinstance(n.kwargs["kwargs"][arg], torch.fx.Node) and _graph_input(n.kwargs["kwargs"][arg])
    ]
    return {
        "kernels": [getattr(k, "fn", k).__name__ for k in kernels],
        "cloned_inputs": cloned,
        "lowbit_ops": sorted({str(n.target) for n in calls if str(n.target).startswith("lowbit.")}),
        "meta": _meta(out),
        "devices": sorted({str(o.device) for o in (out if isinstance(out, (tuple, list)) else (out,))}),
    }


def _contiguous(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    c = lambda t: t.contiguous() if isinstance(t, torch.Tensor) else t
    return tuple(c(a) for a in args), {k: c(v) for k, v in kwargs.items()}


def main(arch: int, dynamic: bool, names: list[str]) -> None:
    for p in on_gpu(arch):
        p.start()
    for name in names:
        for i, (args, kwargs) in enumerate(SAMPLES[name]("cpu")):
            op = getattr(torch.ops.lowbit, name)
            record = {"op": name, "sample": i, "cpu_meta": _meta(op(*args, **kwargs))}  # the CPU reference's
            try:
                try:
                    record.update(trace(name, args, kwargs, dynamic))
                except Exception as e:
                    if _NO_CUDA_GUARD not in str(e):
                        raise
                    record.update(trace(name, *_contiguous(args, kwargs), dynamic), contiguous_retry=True)
            except Exception:  # reported per sample: the test names the op, sample and arch, and shows why
                record["error"] = traceback.format_exc(limit=-12)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    argv = sys.argv[1:]
    main(int(argv[0]), "--dynamic" in argv, [a for a in argv[1:] if a != "--dynamic"])
