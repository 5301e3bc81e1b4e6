"""Demo: SAM's decomposed relative-position attention (fused op) vs SDPA with the materialised bias."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lowbit_flex._demos import Row, time_ms
from lowbit_flex.testing import rel_error


def _sdpa_bias(q, k, v, rel_h, rel_w):
    b, h, n, _ = q.shape
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=(rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, h, n, n)
    )


def run(device: str) -> list[Row]:
    # SAM ViT-B global attention on CUDA (8 images, 64x64 tokens); a small grid on CPU.
    b, h, k_h, k_w, d, dtype = (
        (8, 12, 64, 64, 64, torch.bfloat16) if device == "cuda" else (1, 2, 6, 8, 32, torch.float32)
    )
    n = k_h * k_w
    q, k, v = (torch.randn(b, h, n, d, device=device, dtype=dtype) for _ in range(3))
    rel_h, rel_w = (torch.randn(b, h, n, s, device=device, dtype=dtype) * 2 for s in (k_h, k_w))
    out = torch.ops.lowbit.rel_pos_attention(q, k, v, rel_h, rel_w)
    ref = _sdpa_bias(*(t[:1].double() for t in (q, k, v, rel_h, rel_w)))
    row = Row("rel_pos_attention", "triton kernel" if device == "cuda" else "CPU reference", rel_error(out[:1], ref))
    if device == "cuda":
        row.ms = time_ms(torch.ops.lowbit.rel_pos_attention, q, k, v, rel_h, rel_w)
        row.baseline, row.baseline_ms = "SDPA + materialised bias", time_ms(_sdpa_bias, q, k, v, rel_h, rel_w)
    return [row]
