"""The quant helpers on meta tensors (shape only: models built on meta to load a checkpoint into) and the errors
a user gets for the usual mistakes (each a ValueError/TypeError naming the argument)."""

import pytest
import torch

import lowbit_flex
from lowbit_flex import quant as Q

META = torch.device("meta")


@pytest.mark.parametrize(
    "name, fn, expected",
    [
        ("to_fpx_bits", lambda: Q.to_fpx_bits(torch.empty(3, 8, device=META), Q.E3M2_FN), [((3, 8), torch.uint8)]),
        (
            "from_fpx_bits",
            lambda: Q.from_fpx_bits(torch.empty(8, device=META, dtype=torch.uint8), Q.E2M1_FN),
            [((8,), torch.float32)],
        ),
        ("pack_fpx", lambda: Q.pack_fpx(torch.empty(4, 8, device=META, dtype=torch.uint8), 6), [((4, 6), torch.uint8)]),
        ("pack_int4", lambda: Q.pack_int4(torch.empty(4, 8, device=META, dtype=torch.int8)), [((4, 4), torch.int8)]),
        (
            "quantize_int4_weight",
            lambda: Q.quantize_int4_weight(torch.empty(64, 128, device=META, dtype=torch.bfloat16), 32),
            [((64, 64), torch.int8), ((64, 4), torch.float32)],
        ),
        (
            "quantize_fpx_weight",
            lambda: Q.quantize_fpx_weight(torch.empty(64, 128, device=META, dtype=torch.bfloat16), Q.E2M1_FN),
            [((64, 128), torch.uint8), ((64,), torch.float32)],
        ),
    ],
)
def test_meta_tensors_give_shapes_and_dtypes(name, fn, expected):
    out = fn()
    out = out if isinstance(out, tuple) else (out,)
    assert [(tuple(t.shape), t.dtype) for t in out] == expected and all(t.is_meta for t in out)


@pytest.mark.parametrize(
    "fn, exc, match",
    [
        (lambda: Q.quantize_fpx_weight(torch.randn(4, 8), "e4m3"), ValueError, r"^fmt: expected an FPxFormat"),
        (
            lambda: Q.quantize_fpx_weight(torch.tensor([[1.0, float("nan")]]), Q.E4M3FN),
            ValueError,
            r"^w: contains NaN or inf",
        ),
        (
            lambda: Q.quantize_fpx_weight(torch.randn(2, 4, dtype=torch.complex64), Q.E4M3FN),
            TypeError,
            r"^w: expected a real floating-point dtype",
        ),
        (
            lambda: Q.from_fpx_bits(torch.tensor([0x7F], dtype=torch.uint8), Q.E4M3FN, torch.int32),
            TypeError,
            r"^dtype: expected a floating-point dtype",
        ),
        (lambda: Q.float_quantize(torch.randn(3), "e4m3"), ValueError, r"^ebits: expected an int \(with mbits\) or"),
        (lambda: Q.pack_fpx(torch.zeros(2, 8, dtype=torch.uint8), 4.0), ValueError, r"^bits: expected 4 or 6"),
        (lambda: lowbit_flex.quantize_fp8(torch.randn(1, 2, 5, 8), "block", 0), ValueError, r"^block_size: expected"),
    ],
)
def test_usual_mistakes_name_the_argument(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_a_block_longer_than_the_sequence_is_one_block_without_allocating_it():
    # block_size = 2**30 used to pad to 2**30 tokens (32 GiB) in the reference; it is one block of L tokens.
    x = torch.randn(1, 2, 5, 8)
    q, s = lowbit_flex.quantize_fp8(x, "block", 2**30)
    q1, s1 = lowbit_flex.quantize_fp8(x, "block", 5)
    assert s.shape == (1, 2, 1) and torch.equal(s, s1) and torch.equal(q.view(torch.uint8), q1.view(torch.uint8))
