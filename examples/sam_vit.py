"""A ViT image encoder written like Segment Anything's (``ImageEncoderViT``), random weights, selectable attention.

Patch embedding, absolute position embedding, transformer blocks that attend in 14x14 windows (the 64x64 token grid
is zero-padded to 70x70, i.e. 25 windows) except the global blocks 2, 5, 8, 11, decomposed relative positions in
every block, and SAM's convolutional neck. Only the attention kernel differs between :class:`AttnImpl` choices, so
outputs can be compared and timed one against the other.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lowbit_flex.ops import rel_pos_attention, sam_rel_pos
from lowbit_flex.score_mods import rel_pos_bias, rel_pos_kernel_options
from lowbit_flex.score_mods import sam_rel_pos as sams_rel_pos_einsums


class AttnImpl(enum.Enum):
    FUSED = "lowbit::rel_pos_attention"  # the fused Triton op (exact reference off CUDA)
    # The L x L bias is a broadcast add of rel_h and rel_w (inside the compiled graph under torch.compile), passed to
    # SDPA as attn_mask: the bias is materialised, the attention matrix is not (SDPA's fused kernels take the mask).
    SDPA_BIAS = "SDPA + broadcast-add bias as attn_mask"
    # Segment Anything's own attention: both the logits and the probabilities are (B*nH, L, L) tensors.
    SAM_MATERIALISED = "SAM attention: q@kᵀ + rel-pos bias, softmax, @v"
    FLEX = "flex_attention + rel_pos_bias"  # FlexAttention score_mod (compile the model for a fused kernel)
    # SDPA_BIAS with rel_h/rel_w from lowbit::sam_rel_pos: how much of FUSED's lead is the rel-pos kernel alone.
    SDPA_BIAS_LOWBIT_REL = "SDPA + broadcast-add bias, rel_h/rel_w by lowbit::sam_rel_pos"


# Where rel_h/rel_w come from lowbit::sam_rel_pos (one kernel); the baselines keep SAM's own code (table gathers and
# two einsums), as a user without this library runs it.
LOWBIT_REL_POS = (AttnImpl.FUSED, AttnImpl.FLEX, AttnImpl.SDPA_BIAS_LOWBIT_REL)


@dataclass(frozen=True)
class EncoderConfig:
    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    out_chans: int = 256


VIT_B = EncoderConfig()
# Runs in seconds on a CPU: 8x8 tokens, 3x3 windows (padded to 9x9), one global block.
TINY = EncoderConfig(img_size=128, embed_dim=64, depth=3, num_heads=2, window_size=3, global_attn_indexes=(1,))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, grid: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.randn(2 * grid - 1, self.head_dim) * 0.5)
        self.rel_pos_w = nn.Parameter(torch.randn(2 * grid - 1, self.head_dim) * 0.5)
        self.impl = AttnImpl.FUSED

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, gh, gw, c = x.shape
        n, nh = gh * gw, self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, nh, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, nH, L, hd) each
        rel_pos = sam_rel_pos if self.impl in LOWBIT_REL_POS else sams_rel_pos_einsums
        rel_h, rel_w = rel_pos(q, self.rel_pos_h, self.rel_pos_w, (gh, gw), (gh, gw))
        if self.impl is AttnImpl.FUSED:
            out = rel_pos_attention(q, k, v, rel_h, rel_w)
        elif self.impl in (AttnImpl.SDPA_BIAS, AttnImpl.SDPA_BIAS_LOWBIT_REL):
            bias = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(b, nh, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        elif self.impl is AttnImpl.SAM_MATERIALISED:
            out = sam_materialised_attention(q, k, v, rel_h, rel_w, (gh, gw))
        else:
            from torch.nn.attention.flex_attention import flex_attention

            options = rel_pos_kernel_options(self.head_dim, n)
            out = flex_attention(q, k, v, score_mod=rel_pos_bias(rel_h, rel_w), kernel_options=options)
        return self.proj(out.transpose(1, 2).reshape(b, gh, gw, c))


def sam_materialised_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """What Segment Anything's ``Attention.forward`` with ``add_decomposed_rel_pos`` computes, op for op.

    ``q, k, v``: ``(B, nH, L, hd)`` with ``L = grid[0] * grid[1]``; ``rel_h``/``rel_w`` from ``sam_rel_pos``.
    """
    b, nh, n, hd = q.shape
    gh, gw = grid
    # SAM's layout: heads folded into the batch, scale applied to q before the matmul.
    q, k, v = (t.reshape(b * nh, n, hd) for t in (q, k, v))
    attn = (q * hd**-0.5) @ k.transpose(-2, -1)
    attn = attn.view(b * nh, gh, gw, gh, gw)
    attn = attn + rel_h.reshape(b * nh, gh, gw, gh, 1) + rel_w.reshape(b * nh, gh, gw, 1, gw)
    # Softmax in the input dtype, as SAM does (no float32 upcast of the probabilities): in bf16 the baseline keeps
    # SAM's rounding and its memory traffic (torch still accumulates the softmax itself in float32 internally).
    attn = attn.view(b * nh, n, n).softmax(dim=-1)
    return (attn @ v).view(b, nh, n, hd)


def _window_partition(x: torch.Tensor, w: int) -> tuple[torch.Tensor, tuple[int, int]]:
    b, h, wd, c = x.shape
    ph, pw = (w - h % w) % w, (w - wd % w) % w
    x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, wd + pw
    x = x.view(b, hp // w, w, wp // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w, w, c), (hp, wp)


def _window_unpartition(x: torch.Tensor, w: int, padded: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    (hp, wp), (h, wd) = padded, hw
    b = x.shape[0] // (hp * wp // w // w)
    x = x.view(b, hp // w, wp // w, w, w, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :wd].contiguous()


class Block(nn.Module):
    def __init__(self, cfg: EncoderConfig, window: int):
        super().__init__()
        grid = cfg.img_size // cfg.patch_size
        self.window = window
        self.norm1, self.norm2 = nn.LayerNorm(cfg.embed_dim), nn.LayerNorm(cfg.embed_dim)
        self.attn = Attention(cfg.embed_dim, cfg.num_heads, window or grid)
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.embed_dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window:
            hw = y.shape[1:3]
            y, padded = _window_partition(y, self.window)
            y = _window_unpartition(self.attn(y), self.window, padded, hw)
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class LayerNorm2d(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias).permute(0, 3, 1, 2)


class ImageEncoderViT(nn.Module):
    def __init__(self, cfg: EncoderConfig = VIT_B):
        super().__init__()
        grid = cfg.img_size // cfg.patch_size
        self.patch_embed = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.randn(1, grid, grid, cfg.embed_dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg, 0 if i in cfg.global_attn_indexes else cfg.window_size) for i in range(cfg.depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_chans, 1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, 3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def set_attention(self, impl: AttnImpl) -> ImageEncoderViT:
        for blk in self.blocks:
            blk.attn.impl = impl
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).permute(0, 2, 3, 1) + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))
