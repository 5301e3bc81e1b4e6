"""The ``lowbit`` ops registered with ``torch.library.triton_op`` trace through under ``torch.compile(fullgraph=True)``.

Registered that way, an op is a node in ``torch.export`` graphs but ``torch.compile`` decomposes it: Inductor sees
the reference ops on CPU and the Triton launches (``wrap_triton``) on CUDA, and launches the kernels from generated
code. What a machine without a GPU checks here:

* which ops are triton_ops (a regression to ``custom_op``, or a new op nobody classified, fails);
* CPU: ``torch.compile(fullgraph=True)`` of every sample has no graph break, no lowbit op is left in the graph
  (the op's body was traced into ATen ops), and the result equals eager bit for bit (AOTAutograd, and Inductor
  for one sample);
* CUDA, with fake CUDA tensors in a subprocess (``tests/ops/_trace_fake_cuda.py``, stubbing sm_90 and sm_80): the
  forward graph AOTAutograd hands to Inductor holds ``triton_kernel_wrapper_functional`` nodes instead of the op,
  its outputs have the shapes, dtypes and strides of the CPU reference's, and torch's analysis of what each kernel
  writes succeeded (no op input is copied for a kernel). Non-contiguous inputs are traced contiguous there (see
  that module); ``torch.library.opcheck`` (``test_opcheck_all.py``) checks the fakes' strides.

Only a GPU runs what Inductor generates from those graphs: ``test_cuda_compiled_launches_the_kernels`` (skipped
without one) checks the generated code calls the kernels and equals eager bit for bit.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch._prims_common import check_significant_strides

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from tests.ops._samples import SAMPLES

TRITON_OPS = {
    "fp8_attention",
    "fp8_weight_only_linear",
    "fpx_weight_only_linear",
    "lowbit_attention",
    "quantize_fp8",
    "quantize_int8_blockwise",
    "quantize_int8_rowwise",
    "rel_pos_attention",
    "s8s4_linear",
    "sam_rel_pos",
    "w4a8_linear",
}
# Opaque to compile. _fp8_attention_reference is fp8_attention's path on CUDA GPUs without fp8 MMA (no kernel there,
# and Inductor cannot generate fp8 code for them); the CUTLASS GEMMs are s8s4_linear's nodes where it picks CUTLASS
# and the decode GEMVs and the fp8 weight GEMM are s8s4_linear's / the weight-only linears' nodes where they pick
# the CUDA library (a C++ registration serves them without Python: ops/cutlass_gemm.py).
CUSTOM_OPS = {
    "_fp8_attention_reference",
    "s8s4_gemm_cutlass",
    "s8s4_group_mult_gemm_cutlass",
    "s8s8_groupwise_gemm_cutlass",
    "w4a8_gemv_cuda",
    "float_weight_gemv_cuda",
    "float_weight_gemm_cuda",
    "fp8_weight_gemm_cutlass",
}

# The CUDA library's ops among them: what the dispatch tables pick where the library loads.
CUDA_LIBRARY_OPS = CUSTOM_OPS - {"_fp8_attention_reference"}

# (arch, dynamic) of each fake-CUDA trace; sm_80 takes the paths for GPUs without fp8 conversion instructions.
TRACES = [(90, False), (80, False), (90, True)]
# Ops that fail the dynamic trace (strict xfail: a fix must remove the entry). Empty: fpx_weight_only_linear's
# ebits/mbits became SymInts there until its body specialized on them with int().
DYNAMIC_XFAIL: set[str] = set()
# (op, arch) whose CUDA path launches no Triton kernel but calls an opaque reference op, which the graph must hold.
REFERENCE_OP = {("fp8_attention", 80): "lowbit._fp8_attention_reference.default"}
# (op, arch) whose CUDA path is plain ATen: lowbit_attention runs SDPA on GPUs without fp8 MMA (documented).
ATEN_FALLBACK = {("lowbit_attention", 80)}


def _lowbit_ops() -> set[str]:
    return {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("lowbit::")}


def _triton_ops() -> set[str]:
    # torch.library.triton_op records every op it registers here (with the kernels it finds in the body's source).
    from torch._library.triton import triton_ops_to_kernels

    return {n.split("::", 1)[1] for n in triton_ops_to_kernels if n.startswith("lowbit::")}


def test_triton_ops_are_the_expected_ones():
    assert _triton_ops() == TRITON_OPS
    assert _lowbit_ops() == TRITON_OPS | CUSTOM_OPS, "classify the new op in TRITON_OPS or CUSTOM_OPS"


def _same(out, ref) -> bool:
    """Bit-equal outputs with the same dtype, shape and significant strides (as ``opcheck`` compares them: strides
    of size-1 dimensions and of empty tensors mean nothing, and Inductor lays those out its own way)."""
    out, ref = (out, ref) if isinstance(out, tuple) else ((out,), (ref,))
    bits = lambda t: t.view(torch.uint8) if t.dtype.itemsize == 1 else t  # fp8: compare the codes
    return len(out) == len(ref) and all(
        o.dtype == r.dtype
        and o.shape == r.shape
        and check_significant_strides(o, r, only_cuda=False)[0]
        and torch.equal(bits(o), bits(r))
        for o, r in zip(out, ref)
    )


def _bind(op, kwargs):
    return lambda *args: op(*args, **kwargs)


def _recording_backend(graphs: list):
    from torch._dynamo.backends.common import aot_autograd

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm  # runs the traced graph eagerly

    return aot_autograd(fw_compiler=record)


@pytest.mark.parametrize("name", sorted(TRITON_OPS))
def test_cpu_compile_traces_through_and_equals_eager(name):
    op = getattr(torch.ops.lowbit, name)
    for i, (args, kwargs) in enumerate(SAMPLES[name]("cpu")):
        graphs = []
        torch._dynamo.reset()
        f = torch.compile(_bind(op, kwargs), backend=_recording_backend(graphs), fullgraph=True)
        assert _same(f(*args), op(*args, **kwargs)), f"sample {i}"
        targets = {n.target for gm in graphs for n in gm.graph.nodes if n.op == "call_function"}
        assert op.default not in targets, f"sample {i}: the op was not traced through"
        # Nor any other lowbit op (w4a8_linear once called the opaque s8s4_linear here): CPU graphs are ATen only,
        # which is what lets an AOTInductor CPU package load without lowbit_flex (docs/deploy.md).
        nested = {str(t) for t in targets if getattr(t, "namespace", None) == "lowbit"}
        assert not nested, f"sample {i}: {nested} left in the CPU graph"


@pytest.mark.parametrize("name", sorted(TRITON_OPS))
def test_cpu_inductor_equals_eager(name):
    # Inductor compiles the reference itself (one sample: each compile runs a C++ build on CPU).
    op = getattr(torch.ops.lowbit, name)
    args, kwargs = next(iter(SAMPLES[name]("cpu")))
    torch._dynamo.reset()
    assert _same(torch.compile(_bind(op, kwargs), fullgraph=True)(*args), op(*args, **kwargs))


@pytest.fixture(scope="module")
def fake_cuda_traces():
    """``{(arch, dynamic): {op: [record per sample]}}`` from ``tests/ops/_trace_fake_cuda.py``."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # kernels must be JIT functions
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = {}
    for arch, dynamic in TRACES:
        cmd = [sys.executable, "-m", "tests.ops._trace_fake_cuda", str(arch), *(["--dynamic"] * dynamic)]
        proc = subprocess.run([*cmd, *sorted(TRITON_OPS)], env=env, cwd=root, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-8000:]
        records = [json.loads(line) for line in proc.stdout.splitlines()]
        out[arch, dynamic] = {n: [r for r in records if r["op"] == n] for n in TRITON_OPS}
    return out


@pytest.mark.parametrize("arch, dynamic", TRACES, ids=[f"sm{a}{'-dynamic' if d else ''}" for a, d in TRACES])
@pytest.mark.parametrize("name", sorted(TRITON_OPS))
def test_fake_cuda_graph_launches_the_kernels(fake_cuda_traces, name, arch, dynamic, request):
    if dynamic and name in DYNAMIC_XFAIL:  # strict: a fix makes this fail until the entry goes
        request.applymarker(pytest.mark.xfail(strict=True, reason="ebits/mbits become SymInts and are hashed"))
    records = fake_cuda_traces[arch, dynamic][name]
    assert len(records) == len(list(SAMPLES[name]("cpu")))
    for r in records:
        where = f"sample {r['sample']}"
        assert "error" not in r, f"{where}:\n{r.get('error')}"
        assert f"lowbit.{name}.default" not in r["lowbit_ops"], f"{where}: the op was not traced through"
        empty = all(0 in shape for shape, _, _ in r["cpu_meta"])  # launchers skip empty launches
        if (name, arch) in REFERENCE_OP:
            assert r["kernels"] == [] and (REFERENCE_OP[name, arch] in r["lowbit_ops"] or empty), where
        elif (name, arch) in ATEN_FALLBACK:
            assert r["kernels"] == [] and r["lowbit_ops"] == [], where
        else:  # Triton kernels, or (where the CUDA library loads: a GPU machine) its ops, which the table may pick
            library = any(op.split(".")[1] in CUDA_LIBRARY_OPS for op in r["lowbit_ops"])
            assert r["kernels"] or library or empty, f"{where}: neither a Triton kernel nor a library op in the graph"
        assert r["cloned_inputs"] == [], f"{where}: inputs copied for kernels that do not write them"
        assert r["devices"] == ["cuda:0"], where
        # Traced with contiguous inputs, the strides of the inputs differ; an ATen fallback's output strides are its
        # CUDA kernel's (SDPA's flash layout on a CUDA build), which need not be the CPU reference's.
        if r.get("contiguous_retry") or (name, arch) in ATEN_FALLBACK:
            assert [m[:2] for m in r["meta"]] == [m[:2] for m in r["cpu_meta"]], where
        else:
            assert r["meta"] == r["cpu_meta"], where
    assert any(not r.get("contiguous_retry") for r in records), "no sample traced with its own strides"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: Inductor's CUDA code runs there")
@pytest.mark.parametrize("name", sorted(TRITON_OPS))
def test_cuda_compiled_launches_the_kernels(name):
    from torch._higher_order_ops.triton_kernel_wrap import kernel_side_table, triton_kernel_wrapper_functional
    from torch._inductor.utils import run_and_get_code

    op = getattr(torch.ops.lowbit, name)
    for i, (args, kwargs) in enumerate(SAMPLES[name]("cuda")):
        graphs = []
        torch._dynamo.reset()
        torch.compile(_bind(op, kwargs), backend=_recording_backend(graphs), fullgraph=True)(*args)
        nodes = [n for gm in graphs for n in gm.graph.nodes if n.target is triton_kernel_wrapper_functional]
        kernels = {kernel_side_table.get_kernel(n.kwargs["kernel_idx"]).fn.__name__ for n in nodes}
        torch._dynamo.reset()
        out, code = run_and_get_code(torch.compile(_bind(op, kwargs), fullgraph=True), *args)
        assert _same(out, op(*args, **kwargs)), f"sample {i}"
        code = "\n".join(code)
        assert all(k in code for k in kernels), f"sample {i}: {kernels} not all launched from generated code"
