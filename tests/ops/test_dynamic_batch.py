"""W4A8 with a dynamic batch on (fake) CUDA: exportable without specializing it, and traced into the kernels that
take any M, picked by the example's rows (``tests/ops/_dynamic_batch_fake_cuda.py`` runs the cases; sm_90 with the
CUTLASS library stubbed as available)."""

import json
import os
import subprocess
import sys

import pytest

QUANTIZE = "_quantize_int8_rowwise_kernel"
# (op, group, rows, dynamic) -> the calls of the traced graph, in order
EXPECTED = {
    # A static batch keeps the decode kernels: on Hopper the CUDA GEMV, an op node (served in C++ without Python)
    ("w4a8_linear", None, 2, False): [QUANTIZE, "lowbit.w4a8_gemv_cuda.default"],
    ("w4a8_linear", 128, 2, False): [QUANTIZE, "lowbit.w4a8_gemv_cuda.default"],
    # A dynamic one: per channel, the CUTLASS GEMM as an op node (served in C++ without Python)
    ("w4a8_linear", None, 2, True): [QUANTIZE, "lowbit.s8s4_gemm_cutlass.default"],
    ("w4a8_linear", None, 256, True): [QUANTIZE, "lowbit.s8s4_gemm_cutlass.default"],
    # group-wise: on Hopper the unpack-first GEMM up to M = 512 (for few rows too: the in-register Triton tiles,
    # which do not split K, starve the GPU there, run 54), CUTLASS from M = 513
    ("w4a8_linear", 128, 2, True): [QUANTIZE, "_unpack_int4_kernel", "_s8s8_gemm_kernel"],
    ("w4a8_linear", 128, 256, True): [QUANTIZE, "_unpack_int4_kernel", "_s8s8_gemm_kernel"],
    ("w4a8_linear", 128, 2048, True): [QUANTIZE, "_unpack_int4_kernel", "lowbit.s8s8_groupwise_gemm_cutlass.default"],
    ("s8s4_linear", None, 16, True): ["lowbit.s8s4_gemm_cutlass.default"],
    ("s8s4_linear", 128, 2048, True): ["_unpack_int4_kernel", "lowbit.s8s8_groupwise_gemm_cutlass.default"],
}


@pytest.fixture(scope="module")
def records():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # kernels must be JIT functions
    env["LOWBIT_FLEX_NO_BUILD"] = "1"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [sys.executable, "-m", "tests.ops._dynamic_batch_fake_cuda"]
    proc = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-8000:]
    out = {}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        out[r["op"], r["group"], r["rows"], r["dynamic"]] = r
    return out


@pytest.mark.parametrize("case", list(EXPECTED), ids=lambda c: f"{c[0]}-g{c[1]}-m{c[2]}-{'dyn' if c[3] else 'static'}")
def test_dynamic_batch_exports_and_traces_to_any_m_kernels(records, case):
    r = records[case]
    assert "error" not in r, r.get("error")
    assert r["calls"] == EXPECTED[case]
    assert r["shape"] == [case[2], 512]
    if case[3]:  # exported with the batch symbolic: one node, the op itself
        assert r["exported"] == [f"lowbit.{case[0]}.default"]
