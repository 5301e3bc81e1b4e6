"""Every shipped config on the example models (CPU reference ops): a Llama-style decoder and SAM's ViT encoder
quantize with ``quantize_`` and stay within each format's error of the float model."""

import pytest
import torch

import lowbit_flex
from lowbit_flex.nn import FP8WeightOnlyConfig, FPxWeightOnlyConfig, W4A8Config
from lowbit_flex.testing import rel_error

# (config, allowed relative error of the model output against the float model): about 2.5x what each format
# measured on these random-weight models (Llama / ViT: W4A8 0.080 / 0.077, fp8 0.027 / 0.029, fp6 0.058 / 0.055,
# fp4 0.124 / 0.122).
CONFIGS = [
    (W4A8Config(), 0.2),
    (W4A8Config(group_size=32), 0.2),
    (FP8WeightOnlyConfig(), 0.07),
    (FPxWeightOnlyConfig(3, 2), 0.15),
    (FPxWeightOnlyConfig(2, 1), 0.3),
]


@pytest.mark.parametrize("config, tol", CONFIGS)
def test_llama_block_model(config, tol):
    from examples import llama_w4a8_decode as example

    model = example.build_model(example.TINY, "cpu")
    model.setup_caches(batch=1)
    idx, pos = torch.randint(0, example.TINY.vocab_size, (1, 6)), torch.arange(6)
    ref = model(idx, pos)
    lowbit_flex.quantize_(model, config)
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    model.setup_caches(batch=1)
    assert rel_error(model(idx, pos), ref) < tol


@pytest.mark.parametrize("config, tol", CONFIGS)
def test_sam_vit_encoder(config, tol):
    from examples import sam_vit

    torch.manual_seed(0)
    encoder = sam_vit.ImageEncoderViT(sam_vit.TINY).to(torch.bfloat16).eval()
    image = torch.randn(1, 3, sam_vit.TINY.img_size, sam_vit.TINY.img_size, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = encoder(image)
        lowbit_flex.quantize_(encoder, config)
        out = encoder(image)
    assert not any(type(m) is torch.nn.Linear for m in encoder.modules())
    assert rel_error(out, ref) < tol
