"""``fp8_flex_attention``: quantize q, k, v to fp8, run FlexAttention with the descale in a score_mod, undo v's scale.

Accuracy (see ``docs/fp8_attention.md``): FlexAttention stores its output in the query's dtype, so the output is
rounded to e4m3 (3 mantissa bits) before the v descale; on randn inputs that alone is a ~2-3e-2 relative error, and
it is why ``lowbit::fp8_attention`` (bf16/fp16 output) exists. Use this path when you need FlexAttention's
``score_mod``/``block_mask`` generality in fp8.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from lowbit_flex.kernels.arch import has_fp8_mma
from lowbit_flex.ops.quantize_fp8 import quantize_fp8
from lowbit_flex.score_mods.compose import compose
from lowbit_flex.score_mods.fp8_descale import fp8_descale

_QK_GRANULARITIES = ("tensor", "head", "token", "block")


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    # dynamic=False: one kernel per shape (dynamic shapes can fail to C++-compile on CPU).
    return torch.compile(flex_attention, dynamic=False)


def fp8_flex_supported(device: torch.device) -> bool:
    """FlexAttention takes fp8 inputs on CUDA sm_89+ only (its CPU backend takes fp32/fp16/bf16)."""
    return has_fp8_mma(device)  # False for every non-CUDA device


def _token_scale(scale: Tensor, granularity: str, block_size: int, L: int) -> Tensor:
    """A q/k scale in the shape :func:`fp8_descale` indexes: ``()``, ``(B, H)`` or ``(B, H, L)``."""
    if granularity == "block":
        return scale.repeat_interleave(block_size, dim=2)[:, :, :L].contiguous()
    return scale


def quantize_for_flex(q: Tensor, k: Tensor, v: Tensor, granularity: str = "tensor", block_size: int = 128):
    """``(q8, k8, v8, descale_mod, v_scale)``: the fp8 tensors, the QKᵀ descale ``score_mod`` and v's scale
    broadcastable to the output. v is quantized per tensor (``granularity="tensor"``) or per head (otherwise): a
    token or block scale of v cannot be factored out of the sum over keys."""
    if granularity not in _QK_GRANULARITIES:
        raise ValueError(f"granularity: expected one of {_QK_GRANULARITIES}, got {granularity!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"{name}: expected a (B, H, L, D) tensor, got {getattr(t, 'shape', type(t))}")
    H, Hkv = q.shape[1], k.shape[1]
    if H % Hkv != 0:
        raise ValueError(f"k: expected a number of heads dividing H={H}, got {Hkv}")
    q8, qs = quantize_fp8(q, granularity, block_size)
    k8, ks = quantize_fp8(k, granularity, block_size)
    v_gran = "tensor" if granularity == "tensor" else "head"
    v8, vs = quantize_fp8(v, v_gran)
    qs = _token_scale(qs, granularity, block_size, q.shape[2])
    ks = _token_scale(ks, granularity, block_size, k.shape[2])
    if granularity != "tensor" and Hkv != H:  # fp8_descale indexes scales by the query head
        ks = ks.repeat_interleave(H // Hkv, dim=1)
    v_out = vs if v_gran == "tensor" else vs.repeat_interleave(H // Hkv, dim=1)[:, :, None, None]
    return q8, k8, v8, fp8_descale(qs, ks), v_out


def fp8_flex_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    score_mod=None,
    block_mask=None,
    *,
    granularity: str = "tensor",
    block_size: int = 128,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Tensor:
    """FlexAttention on fp8 e4m3 copies of ``q, k, v`` (``(B, H, L, D)``, float); returns ``q``'s dtype.

    ``granularity`` picks the q/k scales (``"tensor"``, ``"head"``, ``"token"``, ``"block"`` of ``block_size``
    tokens); v gets a per-tensor (``"tensor"``) or per-head scale. The QKᵀ descale is a ``score_mod`` reading the
    scale tensors (:func:`lowbit_flex.score_mods.fp8_descale`), applied before ``score_mod``, so new scale values
    cause no host sync and no recompile. ``scale`` is the softmax scale (default ``1/sqrt(D)``).

    Where FlexAttention cannot take fp8 (CPU, GPUs before sm_89) this runs a documented emulation: the same
    quantized values upcast exactly to float32, FlexAttention in float32, the output rounded to e4m3 as FlexAttention
    does on the GPU, then the v descale. What it does not emulate: the GPU kernel also rounds P to e4m3 for PV.
    """
    q8, k8, v8, descale, v_scale = quantize_for_flex(q, k, v, granularity, block_size)
    mod = descale if score_mod is None else compose(descale, score_mod)
    sm = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    flex = _compiled_flex()
    kw = dict(score_mod=mod, block_mask=block_mask, scale=sm, enable_gqa=enable_gqa)
    if fp8_flex_supported(q.device):
        out8 = flex(q8, k8, v8, **kw)  # fp8 output (FlexAttention returns the query's dtype)
    else:
        out8 = flex(q8.float(), k8.float(), v8.float(), **kw).to(torch.float8_e4m3fn)
    return (out8.float() * v_scale).to(q.dtype)
