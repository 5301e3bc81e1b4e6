"""``lowbit::fpx_weight_only_linear``: weight-only linear with packed MX fp6 (e3m2, e2m3) or fp4 (e2m1) weights.

The weight is int32 words ``(N, tile_words_per_row(K, bits))`` in the tile layout of
:mod:`lowbit_flex.quant.fpx_tiles` (``pack_fpx_tiles``: the layout the kernels decode two codes per bit operation
from), with one float32 scale per output channel. On CUDA the kernel the dispatch table picks by M
(``kernels/float_weight_dispatch.py``) decodes in registers. Registered with ``torch.library.triton_op`` (see
``fp8_weight_only_linear``); :func:`fpx_weight_only_linear_eager` is the module fast path.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import check_same_device, check_tensor, check_weight_only_epilogue
from lowbit_flex.ops.eager import needs_dispatcher
from lowbit_flex.ops.float_weight_eager import float_weight_only_eager
from lowbit_flex.quant.fpx_bits import from_fpx_bits
from lowbit_flex.quant.fpx_format import E2M1_FN, E2M3_FN, E3M2_FN, FPxFormat
from lowbit_flex.quant.fpx_tiles import tile_words_per_row, unpack_fpx_tiles

# (ebits, mbits) -> format: the OCP MX element types the kernels decode.
PACKED_FORMATS: dict[tuple[int, int], FPxFormat] = {(f.ebits, f.mbits): f for f in (E3M2_FN, E2M3_FN, E2M1_FN)}


def packed_format(ebits: int, mbits: int) -> FPxFormat:
    fmt = PACKED_FORMATS.get((ebits, mbits))
    if fmt is None:
        known = ", ".join(f"({e}, {m})" for e, m in PACKED_FORMATS)
        raise ValueError(f"ebits, mbits: expected one of {known} (fp6 e3m2/e2m3, fp4 e2m1), got ({ebits}, {mbits})")
    return fmt


# Every code's value in code order, per format, as plain floats: built once here, outside any tensor mode (the
# reference body also runs under fake tensors, where from_fpx_bits's range check would need the data).
_VALUES = {f: tuple(from_fpx_bits(torch.arange(2**f.bits), f, torch.float64).tolist()) for f in PACKED_FORMATS.values()}


def check_args(x, w_packed, w_scale, ebits, mbits, bias, *, w_name: str = "w_packed") -> FPxFormat:
    """The op's argument checks; returns the format (``w_name``: the weight's argument name in messages;
    ``lowbit::float_weight_gemv_cuda`` shares them)."""
    fmt = packed_format(ebits, mbits)
    if isinstance(w_packed, torch.Tensor) and w_packed.dtype == torch.uint8:
        raise TypeError(
            f"{w_name}: expected int32 words in the tile layout (lowbit_flex.quant.pack_fpx_tiles), got uint8; a "
            "weight packed by pack_fpx (OCP byte order) converts with pack_fpx_tiles(unpack_fpx(w, bits), bits)"
        )
    check_tensor(w_name, w_packed, dtypes=(torch.int32,), ndim=2)
    check_tensor("x", x, min_ndim=1)
    k = x.shape[-1]
    words = tile_words_per_row(k, fmt.bits)
    if w_packed.shape[1] != words:
        raise ValueError(
            f"{w_name}: expected {words} int32 words per row ({k} {fmt.bits}-bit codes in tiles of 128), "
            f"got shape {tuple(w_packed.shape)}"
        )
    check_weight_only_epilogue(x, w_name, w_packed.shape[0], k, w_scale, bias)
    check_same_device(x=x, **{w_name: w_packed})
    return fmt


def _fpx_weight_only_linear(x, w_packed, w_scale, ebits, mbits, bias=None):
    # The format is a property of the compiled code: under torch.compile(dynamic=True) ints arrive as SymInts, and
    # int() specializes on them (a guard) rather than hashing a SymInt in the format lookup.
    ebits, mbits = int(ebits), int(mbits)
    fmt = check_args(x, w_packed, w_scale, ebits, mbits, bias)
    if x.is_cuda:
        from lowbit_flex.kernels.float_weight_dispatch import float_weight_only_linear_cuda

        return float_weight_only_linear_cuda(x, w_packed, w_scale, bias, ebits, mbits)
    # The reference: decode exactly to float64 (a lookup in the format's value table: it traces under fake tensors,
    # where from_fpx_bits's range check would need the data), multiply there, round once.
    table = torch.tensor(_VALUES[fmt], dtype=torch.float64, device=x.device)
    w = table[unpack_fpx_tiles(w_packed, fmt.bits, x.shape[-1]).long()]
    out = x.double() @ w.T * w_scale.double()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


@torch.library.triton_op("lowbit::fpx_weight_only_linear", mutates_args=())
def fpx_weight_only_linear(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    ebits: int,
    mbits: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out[..., n] = sum_k x[..., k] * decode(w)[n, k] * w_scale[n] + bias[n]``, in ``x``'s dtype.

    ``x``: bfloat16/float16 ``(..., K)`` (any K); ``w_packed``: int32 ``(N, tile_words_per_row(K, bits))``
    (:func:`lowbit_flex.quant.pack_fpx_tiles`); ``(ebits, mbits)`` in ``{(3, 2), (2, 3), (2, 1)}``; ``w_scale``:
    float32 ``(N,)``; ``bias``: ``None`` or ``(N,)`` in ``x``'s dtype. Off CUDA: decoded exactly to float64,
    multiplied there and rounded once to ``x``'s dtype. On CUDA: float32 accumulation; at the largest M
    (``DEQUANT_MM`` rows of the dispatch table) the weight is dequantized to ``x``'s dtype first for cuBLAS.
    """
    return _fpx_weight_only_linear(x, w_packed, w_scale, ebits, mbits, bias)


def fpx_weight_only_linear_eager(x, w_packed, w_scale, ebits, mbits, bias=None) -> torch.Tensor:
    """``torch.ops.lowbit.fpx_weight_only_linear`` minus the dispatcher where it cannot matter
    (:func:`~lowbit_flex.ops.eager.needs_dispatcher`); checks and launches planned once per metadata key
    (:func:`~lowbit_flex.ops.float_weight_eager.float_weight_only_eager`)."""
    if needs_dispatcher(x):
        return torch.ops.lowbit.fpx_weight_only_linear(x, w_packed, w_scale, ebits, mbits, bias)
    return float_weight_only_eager(x, w_packed, w_scale, bias, ebits, mbits, _eager_check, _eager_body)


def _eager_check(x, w_packed, w_scale, bias, ebits, mbits) -> None:
    check_args(x, w_packed, w_scale, ebits, mbits, bias)


def _eager_body(x, w_packed, w_scale, bias, ebits, mbits) -> torch.Tensor:
    return _fpx_weight_only_linear(x, w_packed, w_scale, ebits, mbits, bias)
