"""``lowbit_flex.viz``: attention-pattern pictures through attn-gym (matplotlib is optional)."""

import builtins

import pytest
import torch

from lowbit_flex import viz


def test_draws_a_score_mod_under_an_attn_gym_mask(tmp_path):
    pytest.importorskip("matplotlib")
    from attn_gym.masks import generate_natten

    q, k, bias = viz.sam_rel_pos_example(grid=6, head_dim=8)
    out = viz.save_attention_scores(
        tmp_path / "pattern.jpg", q, k, score_mod=bias, mask_mod=generate_natten(6, 6, 3, 3)
    )
    assert out == tmp_path / "pattern.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    q, k, bias = viz.sam_rel_pos_example(grid=4, head_dim=8)
    with pytest.raises(ModuleNotFoundError, match=r"lowbit_flex\[viz\]"):
        viz.save_attention_scores(tmp_path / "x.png", q, k, score_mod=bias)


def test_bad_arguments_name_themselves(tmp_path):
    q = torch.randn(1, 1, 16, 8)
    with pytest.raises(ValueError, match="score_mod, mask_mod: give at least one"):
        viz.save_attention_scores(tmp_path / "x.png", q, q)
    with pytest.raises(ValueError, match=r"^key: expected a \(B, H, L, D\) tensor"):
        viz.save_attention_scores(tmp_path / "x.png", q, q[0], score_mod=lambda s, b, h, i, j: s)
