"""``torch.library.opcheck`` on every op in the ``lowbit`` namespace.

Every registered ``lowbit::`` op must have samples in ``tests/ops/_samples.py``: a new op without them fails
``test_every_op_is_covered``.
"""

import pytest
import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.testing import opcheck
from tests.ops._samples import SAMPLES


def _devices():
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


# Ops taking fp8 tensors: torch's SchemaCheckMode (opcheck's test_schema) compares every argument before/after with
# torch.allclose, which has no fp8 kernel ("mul_cpu_reduced_float" not implemented for 'Float8_e4m3fn'), so
# test_schema cannot run on them; every other opcheck test does.
_NO_SCHEMA_CHECK = ("test_faketensor", "test_autograd_registration", "test_aot_dispatch_dynamic")
OPCHECK_TEST_UTILS = {
    "fp8_attention": _NO_SCHEMA_CHECK,
    "_fp8_attention_reference": _NO_SCHEMA_CHECK,
    "fp8_weight_only_linear": _NO_SCHEMA_CHECK,
    "float_weight_gemv_cuda": _NO_SCHEMA_CHECK,  # its samples mix fp8 and fp4 / fp6 weights
    "fp8_weight_gemm_cutlass": _NO_SCHEMA_CHECK,
    "float_weight_gemm_cuda": _NO_SCHEMA_CHECK,  # its samples mix fp8 and fp4 / fp6 weights
}


def _registered_ops() -> set[str]:
    return {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("lowbit::")}


def test_every_op_is_covered():
    assert _registered_ops() == set(SAMPLES), "add samples for every lowbit:: op to tests/ops/_samples.py"


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_opcheck(name, device):
    op = getattr(torch.ops.lowbit, name).default
    opcheck(op, SAMPLES[name](device), OPCHECK_TEST_UTILS.get(name))
