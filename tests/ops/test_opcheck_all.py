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


SAMPLES = {
    "quantize_int8_rowwise": _quantize_int8_rowwise,
}


def _registered_ops() -> set[str]:
    return {n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names() if n.startswith("lowbit::")}


def test_every_op_is_covered():
    assert _registered_ops() == set(SAMPLES), "add opcheck samples for every lowbit:: op"


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_opcheck(name, device):
    opcheck(getattr(torch.ops.lowbit, name).default, SAMPLES[name](device))
