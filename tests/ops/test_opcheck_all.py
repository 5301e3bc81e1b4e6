"""``torch.library.opcheck`` on every op in the ``lowbit`` namespace.

Every registered ``lowbit::`` op must have samples here: a new op without them fails ``test_every_op_is_covered``.
"""

import pytest
import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.testing import opcheck


def _devices():
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _quantize_int8_rowwise(device):
    yield (torch.randn(3, 40, device=device),), {}
    yield (torch.randn(2, 3, 7, device=device, dtype=torch.bfloat16),), {}


def _quantize_fp8(device):
    x = torch.randn(2, 3, 20, 16, device=device)
    yield (x,), {}
    yield (x.bfloat16(), "block", 8, torch.float8_e5m2), {}
    yield (x, "token"), {"shift": torch.randn(2, 3, 1, 16, device=device)}
    yield (torch.randn(5, 7, device=device, dtype=torch.float16), "tensor"), {}


def _quantize_int8_blockwise(device):
    x = torch.randn(1, 2, 30, 16, device=device, dtype=torch.bfloat16)
    yield (x, 8), {}
    yield (x, 16, x.float().mean(dim=-2, keepdim=True)), {}


def _fp8_attention(device):
    from lowbit_flex.attention.lowbit_attention import quantize_attention_inputs

    q = torch.randn(1, 2, 70, 64, device=device)
    k, v = torch.randn(2, 1, 1, 130, 64, device=device).unbind(0)
    yield quantize_attention_inputs(q, k, v, "fp8"), {"causal": True}
    yield quantize_attention_inputs(q, k, v, "int8"), {"out_dtype": torch.float16, "pv_fp16_accum": True}


SAMPLES = {
    "quantize_int8_rowwise": _quantize_int8_rowwise,
    "quantize_fp8": _quantize_fp8,
    "quantize_int8_blockwise": _quantize_int8_blockwise,
    "fp8_attention": _fp8_attention,
}


# Ops taking fp8 tensors: torch's SchemaCheckMode (opcheck's test_schema) compares every argument before/after with
# torch.allclose, which has no fp8 kernel ("mul_cpu_reduced_float" not implemented for 'Float8_e4m3fn'), so
# test_schema cannot run on them; every other opcheck test does.
OPCHECK_TEST_UTILS = {"fp8_attention": ("test_faketensor", "test_autograd_registration", "test_aot_dispatch_dynamic")}


def _registered_ops() -> set[str]:
    return {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("lowbit::")}


def test_every_op_is_covered():
    assert _registered_ops() == set(SAMPLES), "add opcheck samples for every lowbit:: op"


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_opcheck(name, device):
    op = getattr(torch.ops.lowbit, name).default
    if name in OPCHECK_TEST_UTILS:
        for args, kwargs in SAMPLES[name](device):
            torch.library.opcheck(op, args, kwargs, test_utils=OPCHECK_TEST_UTILS[name])
        return
    opcheck(op, SAMPLES[name](device))
