import pytest
import torch
from attn_gym.masks import generate_sliding_window
from torch.nn.attention.flex_attention import and_masks, create_block_mask, flex_attention

from lowbit_flex.score_mods import check_rel_pos_inputs, rel_pos_bias, rel_pos_kernel_options
from lowbit_flex.score_mods._rel_pos_layout import normalize_rel_pos
from lowbit_flex.score_mods.rel_pos_bias import _build, _Formulation
from lowbit_flex.testing import assert_rel_error

# One compiled FlexAttention shared by the tests (CPU compiles are slow; dynamic=False avoids C++ failures).
_compiled_flex = torch.compile(flex_attention, dynamic=False)


def _inputs(b=2, h=3, k_h=5, k_w=7, d=16, dtype=torch.float64):
    n = k_h * k_w
    q, k, v = (torch.randn(b, h, n, d, dtype=dtype) for _ in range(3))
    return q, k, v, torch.randn(b, h, n, k_h, dtype=dtype), torch.randn(b, h, n, k_w, dtype=dtype)


def _bias_f64(rel_h, rel_w):
    """The definition, written with explicit (row, column) indices of every key."""
    k_w = rel_w.shape[-1]
    j = torch.arange(rel_h.shape[-1] * k_w)
    return rel_h.double()[..., j // k_w] + rel_w.double()[..., j % k_w]


def _attention_f64(q, k, v, bias, mask=None):
    s = q.double() @ k.double().transpose(-1, -2) / q.shape[-1] ** 0.5 + bias
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, -1) @ v.double()


@pytest.mark.parametrize("formulation", list(_Formulation))
def test_every_formulation_eager_matches_float64_definition(formulation):
    q, k, v, rh, rw = _inputs()
    out = flex_attention(q, k, v, score_mod=_build(normalize_rel_pos(rh, rw), formulation))
    tol = 1e-12
    assert_rel_error(out, _attention_f64(q, k, v, _bias_f64(rh, rw)), tol)


def test_sam_layouts_give_the_same_score_mod():
    q, k, v, rh, rw = _inputs(b=2, h=3, k_h=4, k_w=6)
    ref = flex_attention(q, k, v, score_mod=rel_pos_bias(rh, rw))
    flat_h, flat_w = rh.reshape(6, 24, 4), rw.reshape(6, 24, 6)  # SAM's (B*H, q_h*q_w, k)
    five_h, five_w = rh.reshape(6, 4, 6, 4)[..., None], rw.reshape(6, 4, 6, 6)[:, :, :, None, :]  # SAM broadcast
    for h_, w_ in ((flat_h, flat_w), (five_h, five_w)):
        out = flex_attention(q, k, v, score_mod=rel_pos_bias(h_, w_, num_heads=3))
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert rel_pos_bias(rh, rw).__name__ == "rel_pos_bias_4x6"


def _softcap_mask_case(dtype):
    """attention-gym's (causal) sliding window AND a key-row neighbourhood, plus a soft-cap after the bias."""
    q, k, v, rh, rw = _inputs(b=1, h=2, k_h=6, k_w=8, d=16, dtype=dtype)
    k_w, n = 8, 48
    near_rows = lambda b, h, qi, ki: (qi // k_w - ki // k_w).abs() <= 2
    block_mask = create_block_mask(
        and_masks(generate_sliding_window(20), near_rows), None, None, n, n, device="cpu", BLOCK_SIZE=16
    )
    bias_mod = rel_pos_bias(rh, rw)

    def softcapped(score, b, h, qi, ki):
        return 20.0 * torch.tanh(bias_mod(score, b, h, qi, ki) / 20.0)

    i = torch.arange(n)
    lag = i[:, None] - i[None, :]
    mask = (lag >= 0) & (lag <= 20) & ((i[:, None] // k_w - i[None, :] // k_w).abs() <= 2)
    s = q.double() @ k.double().transpose(-1, -2) / 4 + _bias_f64(rh, rw)
    s = (20 * torch.tanh(s / 20)).masked_fill(~mask, float("-inf"))
    return (q, k, v), {"score_mod": softcapped, "block_mask": block_mask}, torch.softmax(s, -1) @ v.double()


def test_composes_with_attention_gym_masks_and_another_score_mod_eager():
    args, kwargs, ref = _softcap_mask_case(torch.float64)
    assert_rel_error(flex_attention(*args, **kwargs), ref, 1e-12)


@pytest.mark.slow
def test_compiled_bf16_batch1_composed_matches_float64():
    """The compiled FlexAttention path (one CPU compile, ~30 s cold): bf16, batch 1, with the mask and soft-cap."""
    args, kwargs, ref = _softcap_mask_case(torch.bfloat16)
    out = _compiled_flex(*args, **kwargs)
    assert out.dtype == torch.bfloat16
    assert_rel_error(out, ref, 1e-2)


def test_kernel_options_table_and_bad_arguments():
    """Windows (L <= 256) and longer grids take their measured tiles; head dims past 128 take FlexAttention's own;
    each call returns a new dict (FlexAttention may add keys to the one it is given)."""
    window, grid = rel_pos_kernel_options(64, 196), rel_pos_kernel_options(80, 4096)
    assert window == {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3}
    assert grid == {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}
    assert rel_pos_kernel_options(64, 257) == grid and rel_pos_kernel_options(128, 256) == window
    assert rel_pos_kernel_options(256, 4096) == {}
    window["BLOCK_N"] = 128
    assert rel_pos_kernel_options(64, 196)["BLOCK_N"] == 32
    for args, match in [
        ((0, 196), "head_dim"),
        ((64.0, 196), "head_dim"),
        ((64, True), "seq_len"),
        ((64, -1), "seq_len"),
    ]:
        with pytest.raises(ValueError, match=match):
            rel_pos_kernel_options(*args)


@pytest.mark.slow
@pytest.mark.parametrize("k_h, k_w", [(14, 14), (6, 48)])
def test_compiled_with_kernel_options_matches_float64(k_h, k_w):
    """The compiled score_mod under the recommended options (on CUDA: those tiles; on CPU FlexAttention's C++
    template ignores them), a window and a longer grid, bf16, against float64."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v, rh, rw = (t.to(device, torch.bfloat16) for t in _inputs(b=1, h=2, k_h=k_h, k_w=k_w, d=64))
    options = rel_pos_kernel_options(q.shape[3], q.shape[2])
    out = _compiled_flex(q, k, v, score_mod=rel_pos_bias(rh, rw), kernel_options=options)
    assert_rel_error(out, _attention_f64(q, k, v, _bias_f64(rh, rw)), 1e-2)


class _SamAttention(torch.nn.Module):
    def __init__(self, rel_h, rel_w):
        super().__init__()
        self.register_buffer("rel_h", rel_h)
        self.register_buffer("rel_w", rel_w)

    def forward(self, q, k, v):
        return flex_attention(q, k, v, score_mod=rel_pos_bias(self.rel_h, self.rel_w))


def test_torch_export_of_a_module_using_the_score_mod():
    q, k, v, rh, rw = _inputs(b=1, h=2, k_h=3, k_w=5, d=16, dtype=torch.float32)
    module = _SamAttention(rh, rw)
    exported = torch.export.export(module, (q, k, v))
    q2, k2, v2 = (torch.randn_like(q) for _ in range(3))
    assert_rel_error(exported.module()(q2, k2, v2), _attention_f64(q2, k2, v2, _bias_f64(rh, rw)), 1e-5)


_GOOD_H, _GOOD_W = torch.randn(2, 3, 20, 4), torch.randn(2, 3, 20, 5)


@pytest.mark.parametrize("rel_h, rel_w, kwargs, exc, match", [
    (_GOOD_H.long(), _GOOD_W, {}, TypeError, "rel_h: expected a floating-point dtype"),
    ("x", _GOOD_W, {}, TypeError, "rel_h: expected a torch.Tensor"),
    (_GOOD_H, _GOOD_W.double(), {}, ValueError, "rel_w: expected dtype torch.float32"),
    (_GOOD_H, torch.randn(2, 3, 20, 5, device="meta"), {}, ValueError, "rel_w: expected a tensor on cpu"),
    (_GOOD_H[0], _GOOD_W, {}, ValueError, "rel_h, rel_w: expected"),
    (_GOOD_H, _GOOD_W[:, :2], {}, ValueError, "rel_w: leading dimensions"),
    (torch.randn(2, 3, 21, 4), torch.randn(2, 3, 21, 5), {}, ValueError, "rel_h: expected Lq = k_h \\* k_w"),
    (torch.randn(6, 4, 5, 4), torch.randn(6, 4, 5, 5), {}, ValueError, "looks like SAM's"),
    (_GOOD_H.reshape(6, 20, 4), _GOOD_W.reshape(6, 20, 5), {}, ValueError, "rel_h: the \\(B\\*H, ...\\) layout"),
    (_GOOD_H.reshape(6, 20, 4), _GOOD_W.reshape(6, 20, 5), {"num_heads": 4}, ValueError, "not a multiple"),
    (_GOOD_H.reshape(6, 20, 4), _GOOD_W.reshape(6, 20, 5), {"num_heads": 0}, ValueError, "num_heads: expected"),
    (_GOOD_H.reshape(6, 4, 5, 4, 1), _GOOD_W.reshape(6, 4, 5, 5, 1), {"num_heads": 3}, ValueError, "rel_w: expected"),
])  # fmt: skip
def test_bad_construction_eager_and_fake(rel_h, rel_w, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        rel_pos_bias(rel_h, rel_w, **kwargs)
    if isinstance(rel_h, torch.Tensor) and rel_w.device.type != "meta":
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
            rel_pos_bias(mode.from_tensor(rel_h), mode.from_tensor(rel_w), **kwargs)


def _qk(b=2, h=3, n=20, dtype=torch.float32):
    return torch.randn(b, h, n, 8, dtype=dtype), torch.randn(b, h, n, 8, dtype=dtype)


@pytest.mark.parametrize("q, k, rel_h, rel_w, match", [
    (*_qk(b=1), _GOOD_H, _GOOD_W, "rel_h: batch and heads \\(2, 3\\) do not match q's"),
    (*_qk(h=2), _GOOD_H, _GOOD_W, "rel_h: batch and heads"),
    (*_qk(n=24), _GOOD_H, _GOOD_W, "rel_h: 20 query positions, but q has Lq = 24"),
    (_qk()[0], _qk(n=24)[1], _GOOD_H, _GOOD_W, "k: expected Lkv = k_h \\* k_w"),
    (*_qk(dtype=torch.bfloat16), _GOOD_H.half(), _GOOD_W.half(), "rel_h: expected dtype torch.bfloat16"),
    (*_qk(), _GOOD_H.to("meta"), _GOOD_W.to("meta"), "rel_h: expected a tensor on cpu"),
    (*_qk(), _GOOD_H.reshape(3, 2, 20, 4), _GOOD_W.reshape(3, 2, 20, 5), "rel_h: batch and heads"),
])  # fmt: skip
def test_check_rel_pos_inputs_eager_fake_and_compiled(q, k, rel_h, rel_w, match):
    with pytest.raises(ValueError, match=match):
        check_rel_pos_inputs(q, k, rel_h, rel_w)
    if rel_h.device.type != "meta":
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(ValueError, match=match):
            check_rel_pos_inputs(*(mode.from_tensor(t) for t in (q, k, rel_h, rel_w)))

    @torch.compile(backend="eager", fullgraph=False)
    def attend(q, k, rel_h, rel_w):
        check_rel_pos_inputs(q, k, rel_h, rel_w)
        return q + 1

    with pytest.raises(ValueError, match=match):
        attend(q, k, rel_h, rel_w)


def test_check_rel_pos_inputs_accepts_good_inputs_in_every_layout():
    q, k = _qk()
    check_rel_pos_inputs(q, k, _GOOD_H, _GOOD_W)
    check_rel_pos_inputs(q, k, _GOOD_H.reshape(6, 20, 4), _GOOD_W.reshape(6, 20, 5))  # num_heads from q
    check_rel_pos_inputs(q.bfloat16(), k.bfloat16(), _GOOD_H, _GOOD_W)  # float32 tables with bf16 q
