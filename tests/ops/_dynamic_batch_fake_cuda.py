"""W4A8 on fake CUDA tensors with a dynamic batch: ``torch.export`` must not specialize it, and the traced graph must
hold the kernels (and CUTLASS op nodes) the dispatch picks for the example's rows among those that take any M.

Run by ``tests/ops/test_dynamic_batch.py`` as ``python -m tests.ops._dynamic_batch_fake_cuda`` with
``TRITON_INTERPRET`` unset (see ``_trace_fake_cuda.py``, whose GPU stubs it reuses). The CUTLASS library is stubbed
as available on sm_90 (its shape checks kept), so the CUTLASS rows of the table are taken as on an H200. Prints one
JSON line per case.
"""

from __future__ import annotations

import json
import traceback
from unittest import mock

import torch
from torch._dynamo.backends.common import aot_autograd
from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table
from torch._subclasses.fake_tensor import FakeTensorMode

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.kernels import s8s4_cutlass, s8s8_groupwise_cutlass
from tests.ops._trace_fake_cuda import on_gpu

# (op, group or None, example rows, dynamic): N = 512, K = 256 (N > K: the "wide" rows apply)
CASES = [
    ("w4a8_linear", None, 2, False),
    ("w4a8_linear", None, 2, True),
    ("w4a8_linear", None, 256, True),
    ("w4a8_linear", 128, 2, False),
    ("w4a8_linear", 128, 2, True),
    ("w4a8_linear", 128, 256, True),
    ("w4a8_linear", 128, 2048, True),
    ("s8s4_linear", None, 16, True),
    ("s8s4_linear", 128, 2048, True),
]


def _cutlass_available() -> list:
    """The CUTLASS checks minus the questions a CPU-only torch cannot answer (is there a GPU, does the library load)."""
    return [
        mock.patch.object(s8s4_cutlass, "library_available", lambda: True),
        mock.patch.object(s8s4_cutlass, "cutlass_s8s4_supported", lambda f, M, N, K: N % 8 == 0 and K % 32 == 0),
        mock.patch.object(s8s8_groupwise_cutlass, "supported", lambda M, N, K, g: N % 8 == 0 and K % g == 0),
    ]


def _graph_calls(gm: torch.fx.GraphModule) -> list[str]:
    calls = []
    for n in gm.graph.nodes:
        if n.op != "call_function":
            continue
        if "triton_kernel_wrapper" in str(n.target):
            calls.append(kernel_side_table.get_kernel(n.kwargs["kernel_idx"]).fn.__name__)
        elif str(n.target).startswith("lowbit."):
            calls.append(str(n.target))
    return calls


def run(op: str, group: int | None, rows: int, dynamic: bool, N: int = 512, K: int = 256) -> dict:
    mode = FakeTensorMode()
    with mode:
        w = torch.empty(N, K // 2, dtype=torch.int8, device="cuda")
        ws = torch.empty(N, K // group, device="cuda") if group else torch.empty(N, device="cuda")
        if op == "w4a8_linear":
            args = (torch.empty(rows, K, dtype=torch.bfloat16, device="cuda"),)
            call = lambda x, xs: torch.ops.lowbit.w4a8_linear(x, w, ws)
        else:
            args = (torch.empty(rows, K, dtype=torch.int8, device="cuda"), torch.empty(rows, device="cuda"))
            call = lambda x, xs: torch.ops.lowbit.s8s4_linear(x, xs, w, ws)

    class Layer(torch.nn.Module):
        def forward(self, x, xs=None):
            return call(x, xs)

    record = {"op": op, "group": group, "rows": rows, "dynamic": dynamic}
    if dynamic:  # export must keep the batch symbolic (it raises on a specialization)
        batch = torch.export.Dim("batch", min=1, max=4096)
        with mode:
            ep = torch.export.export(Layer(), args, dynamic_shapes=tuple({0: batch} for _ in args))
        record["exported"] = [str(n.target) for n in ep.graph.nodes if str(n.target).startswith("lowbit.")]
    graphs = []
    backend = aot_autograd(fw_compiler=lambda gm, _: graphs.append(gm) or gm)
    torch._dynamo.reset()
    compiled = torch.compile(Layer(), backend=backend, fullgraph=True, dynamic=dynamic)
    for a in args if dynamic else ():
        torch._dynamo.mark_dynamic(a, 0)  # a guard specializing it raises
    with mode:
        out = compiled(*args)
    record["calls"] = _graph_calls(graphs[0])
    record["shape"] = list(out.shape)
    return record


def main() -> None:
    for p in on_gpu(90) + _cutlass_available():
        p.start()
    for case in CASES:
        try:
            record = run(*case)
        except Exception:
            record = dict(zip(("op", "group", "rows", "dynamic"), case), error=traceback.format_exc(limit=-8))
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
