import copy

import pytest
import torch

from examples.sam_image_encoder import compare, main
from examples.sam_vit import TINY, AttnImpl, ImageEncoderViT

# bf16 encoders land at ~8e-3 relative to float64 (every attention alike); swapping the h and w rel-pos tables costs
# ~0.5, so this bound fails on a wrong bias while allowing bf16 rounding.
BF16_REL_TOL = 2e-2


def test_tiny_encoder_every_attention_matches_float64():
    """Windowed blocks with padding (8x8 tokens, 3x3 windows -> 9x9) and a global block, batch 1 and 2."""
    model = ImageEncoderViT(TINY).eval()
    for batch in (1, 2):
        errors = compare(model, TINY, torch.float32, batch, list(AttnImpl))
        assert set(errors) == {impl.value for impl in AttnImpl}
        assert AttnImpl.SAM_MATERIALISED.value in errors
        for name, e in errors.items():
            assert e["rel"] <= 1e-5, (name, e)


def test_sam_materialised_in_float64_equals_the_sdpa_reference():
    """SAM's op-for-op attention and the float64 reference (SDPA with the bias as attn_mask) are separate code paths:
    in float64 they must agree to rounding, so a layout slip in either (h/w, view order) shows."""
    model = ImageEncoderViT(TINY).eval()
    e = compare(model, TINY, torch.float64, 2, [AttnImpl.SAM_MATERIALISED])[AttnImpl.SAM_MATERIALISED.value]
    assert e["rel"] <= 1e-12, e


def test_tiny_encoder_every_attention_bf16_matches_float64():
    model = ImageEncoderViT(TINY).eval()
    errors = compare(model, TINY, torch.bfloat16, 2, list(AttnImpl))
    for name, e in errors.items():
        assert e["rel"] <= BF16_REL_TOL, (name, e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bf16_tolerance_catches_a_swapped_rel_pos_bias(dtype):
    """Poison: the same encoder with rel_pos_h and rel_pos_w swapped must fail the bound the tests above use."""
    model = ImageEncoderViT(TINY).eval()
    x = torch.randn(1, 3, TINY.img_size, TINY.img_size)
    with torch.no_grad():
        ref = copy.deepcopy(model).double().set_attention(AttnImpl.SDPA_BIAS)(x.double())
        for blk in model.blocks:
            blk.attn.rel_pos_h, blk.attn.rel_pos_w = blk.attn.rel_pos_w, blk.attn.rel_pos_h
        out = model.to(dtype).set_attention(AttnImpl.SAM_MATERIALISED)(x.to(dtype)).double()
    assert float((out - ref).norm() / ref.norm()) > 10 * BF16_REL_TOL


def test_example_main_runs_on_cpu(capsys):
    main(["--device", "cpu"])
    out = capsys.readouterr().out
    assert "lowbit::rel_pos_attention" in out and AttnImpl.SAM_MATERIALISED.value in out and "rel" in out
