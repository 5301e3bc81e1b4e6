import torch

from examples.sam_image_encoder import compare, main
from examples.sam_vit import TINY, AttnImpl, ImageEncoderViT


def test_tiny_encoder_every_attention_matches_float64():
    """Windowed blocks with padding (8x8 tokens, 3x3 windows -> 9x9) and a global block, batch 1 and 2."""
    model = ImageEncoderViT(TINY).eval()
    for batch in (1, 2):
        errors = compare(model, TINY, torch.float32, batch, list(AttnImpl))
        assert set(errors) == {impl.value for impl in AttnImpl}
        for name, e in errors.items():
            assert e["rel"] <= 1e-5, (name, e)


def test_example_main_runs_on_cpu(capsys):
    main(["--device", "cpu"])
    out = capsys.readouterr().out
    assert "lowbit::rel_pos_attention" in out and "rel" in out
