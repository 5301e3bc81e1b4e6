import math

import pytest
import torch

from lowbit_flex.score_mods import get_rel_pos, rel_pos_bias, sam_rel_pos


def _resample_f64(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Linear resampling with half-pixel centres (the F.interpolate convention), one output row at a time."""
    n = table.shape[0]
    out = torch.empty(rows, table.shape[1], dtype=torch.float64)
    for o in range(rows):
        src = max((o + 0.5) * n / rows - 0.5, 0.0)
        i0 = min(math.floor(src), n - 1)
        i1 = min(i0 + 1, n - 1)
        w = src - i0
        out[o] = (1 - w) * table[i0].double() + w * table[i1].double()
    return out


def _get_rel_pos_f64(q_size: int, k_size: int, table: torch.Tensor) -> torch.Tensor:
    rows = 2 * max(q_size, k_size) - 1
    t = table.double() if table.shape[0] == rows else _resample_f64(table, rows)
    q_step, k_step = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    out = torch.empty(q_size, k_size, table.shape[1], dtype=torch.float64)
    for i in range(q_size):
        for j in range(k_size):
            out[i, j] = t[int(i * q_step - j * k_step + (k_size - 1) * k_step)]
    return out


@pytest.mark.parametrize(
    "q_size, k_size, rows", [(5, 5, 9), (5, 5, 13), (14, 14, 27), (4, 8, 15), (8, 4, 7), (3, 6, 5)]
)
def test_get_rel_pos_matches_float64_definition(q_size, k_size, rows):
    table = torch.randn(rows, 6, dtype=torch.float64)
    torch.testing.assert_close(get_rel_pos(q_size, k_size, table), _get_rel_pos_f64(q_size, k_size, table))


@pytest.mark.parametrize("layout", ["sam_3d", "bhld"])
@pytest.mark.parametrize("q_hw, k_hw", [((4, 6), (4, 6)), ((5, 3), (5, 3))])
def test_sam_rel_pos_matches_float64_einsums(layout, q_hw, k_hw):
    (q_h, q_w), (k_h, k_w), c, b, h = q_hw, k_hw, 8, 2, 3
    q = torch.randn(b * h, q_h * q_w, c, dtype=torch.float64)
    tab_h, tab_w = torch.randn(2 * q_h + 1, c, dtype=torch.float64), torch.randn(2 * q_w - 1, c, dtype=torch.float64)
    q_in = q if layout == "sam_3d" else q.reshape(b, h, q_h * q_w, c)
    rel_h, rel_w = sam_rel_pos(q_in, tab_h, tab_w, q_hw, k_hw)
    r_h, r_w = _get_rel_pos_f64(q_h, k_h, tab_h), _get_rel_pos_f64(q_w, k_w, tab_w)
    ref_h = torch.empty(b * h, q_h * q_w, k_h, dtype=torch.float64)
    ref_w = torch.empty(b * h, q_h * q_w, k_w, dtype=torch.float64)
    for i in range(q_h * q_w):
        ref_h[:, i] = q[:, i] @ r_h[i // q_w].T
        ref_w[:, i] = q[:, i] @ r_w[i % q_w].T
    assert rel_h.shape == (*q_in.shape[:-1], k_h) and rel_w.shape == (*q_in.shape[:-1], k_w)
    torch.testing.assert_close(rel_h.reshape(ref_h.shape), ref_h)
    torch.testing.assert_close(rel_w.reshape(ref_w.shape), ref_w)


def test_sam_rel_pos_feeds_the_score_mod_like_sams_broadcast_add():
    """SAM adds rel_h[..., None] and rel_w[..., None, :] to attn.view(B*H, q_h, q_w, k_h, k_w)."""
    from torch.nn.attention.flex_attention import flex_attention

    b, h, size, c = 1, 2, 4, 8
    q, k, v = (torch.randn(b, h, size * size, c, dtype=torch.float64) for _ in range(3))
    tabs = torch.randn(2 * size - 1, c, dtype=torch.float64), torch.randn(2 * size - 1, c, dtype=torch.float64)
    rel_h, rel_w = sam_rel_pos(q.reshape(b * h, size * size, c), *tabs, (size, size), (size, size))
    attn = (q * c**-0.5 @ k.transpose(-1, -2)).reshape(b * h, size, size, size, size)
    grid_h, grid_w = rel_h.reshape(b * h, size, size, size), rel_w.reshape(b * h, size, size, size)
    attn = attn + grid_h[..., None] + grid_w[..., None, :]
    ref = torch.softmax(attn.reshape(b, h, size * size, size * size), -1) @ v
    out = flex_attention(q, k, v, score_mod=rel_pos_bias(rel_h, rel_w, num_heads=h))
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("q, tab_h, match", [
    (torch.randn(2, 15, 8), torch.randn(7, 8), "q: expected"),
    (torch.randn(2, 16, 8), torch.randn(7, 6), "rel_pos_h, rel_pos_w: expected head_dim 8"),
    (torch.randn(2, 16, 8), torch.randn(7), "rel_pos: expected"),
])  # fmt: skip
def test_bad_input(q, tab_h, match):
    with pytest.raises(ValueError, match=match):
        sam_rel_pos(q, tab_h, torch.randn(7, 8), (4, 4), (4, 4))
