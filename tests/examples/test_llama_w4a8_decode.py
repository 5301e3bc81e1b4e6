import pytest
import torch

import lowbit_flex
from lowbit_flex.nn import W4A8Linear
from lowbit_flex.testing import rel_error


@pytest.fixture(scope="module")
def example():
    from examples import llama_w4a8_decode

    return llama_w4a8_decode


def test_tiny_compare_runs(example):
    result = example.compare(example.TINY, "cpu", n_new=4, compile=False, group_sizes=(None, 32),
                             weight_only=("fp8", "fp6", "fp4"))  # fmt: skip
    names = ("w4a8", "w4a8 g32", "fp8", "fp6", "fp4")
    assert set(result) == {"bf16 tok/s"} | {f"{n} {k}" for n in names for k in ("tok/s", "speed-up", "same tokens")}
    assert result["bf16 tok/s"] > 0 and all(result[f"{n} tok/s"] > 0 for n in names)
    assert all(0 <= result[f"{n} same tokens"] <= 1 for n in names)


def test_tiny_w4a8_logits_close_and_decode_step_has_no_graph_break(example):
    args = example.TINY
    model = example.build_model(args, "cpu")
    model.setup_caches(batch=1)
    idx, pos = torch.randint(0, args.vocab_size, (1, 6)), torch.arange(6)
    ref = model(idx, pos)
    lowbit_flex.quantize_(model, lowbit_flex.W4A8Config())
    assert sum(isinstance(m, W4A8Linear) for m in model.modules()) == 5 * args.n_layer + 1
    model.setup_caches(batch=1)
    assert rel_error(model(idx, pos), ref) < 0.25
    tok, step_pos = torch.randint(0, args.vocab_size, (1, 1)), torch.tensor([6])
    explained = torch._dynamo.explain(example.decode_one_token)(model, tok, step_pos)
    assert explained.graph_break_count == 0


def test_generate_advances_the_position_on_the_device_and_sizes_the_cache(example):
    """``generate`` keeps the position in a tensor it advances in place (no host copy per token): its tokens must be
    those of a loop that passes every position explicitly. The cache holds only the positions asked for."""
    args = example.TINY
    model = example.build_model(args, "cpu")
    model.setup_caches(batch=1, max_seq_len=64)
    assert model.layers[0].cache.k.shape[2] == 64 and model.freqs.shape[0] == 64 and model.causal.shape == (64, 64)
    prompt = torch.randint(0, args.vocab_size, (1, 5), generator=torch.Generator().manual_seed(3))
    tokens, _ = example.generate(model, prompt, 6, example.decode_one_token)
    model.setup_caches(batch=1, max_seq_len=64)  # fresh caches for the reference loop
    tok = example.decode_one_token(model, prompt, torch.arange(5))
    expected = [tok]
    for i in range(5):
        tok = example.decode_one_token(model, tok, torch.tensor([5 + i]))
        expected.append(tok)
    assert torch.equal(tokens, torch.cat([prompt, *expected], dim=1))


def test_rope_in_real_arithmetic_is_the_complex_rotation(example):
    # float64 reference: each pair (x0, x1) as x0 + i x1, times exp(i * position * frequency)
    T, D, base = 7, 16, 10000.0
    x = torch.randn(2, T, 3, D, dtype=torch.float64)
    inv = 1.0 / base ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    rot = torch.polar(torch.ones(T, D // 2, dtype=torch.float64), torch.outer(torch.arange(T).double(), inv))
    ref = torch.view_as_real(torch.view_as_complex(x.reshape(2, T, 3, -1, 2)) * rot[None, :, None]).flatten(3)
    out = example._rope(x, example.rope_table(T, D, base))
    assert out.dtype == torch.float64 and rel_error(out, ref) < 1e-6  # the table is float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("config", ["bf16", "w4a8", "fp8", "fp4"])
def test_the_cuda_graph_step_decodes_the_eager_tokens(example, config):
    """``--cuda-graphs`` replays one captured step: its tokens must be those of the eager loop on the same model
    (the same kernels on the same inputs), for bf16 and for the quantized linears' eager paths."""
    args = example.TINY
    model = example.build_model(args, "cuda")
    if config == "w4a8":
        lowbit_flex.quantize_(model, lowbit_flex.W4A8Config())
    elif config != "bf16":
        lowbit_flex.quantize_(model, example.WEIGHT_ONLY[config])
    prompt = torch.randint(0, args.vocab_size, (1, 8), generator=torch.Generator().manual_seed(2)).cuda()
    model.setup_caches(batch=1, max_seq_len=64)
    eager, _ = example.generate(model, prompt, 6, example.decode_one_token)
    model.setup_caches(batch=1, max_seq_len=64)  # fresh caches, which the graph captures
    with torch.no_grad():
        step = example.cuda_graph_step(model, torch.tensor([8], device="cuda"))
    graphed, _ = example.generate(model, prompt, 6, step)
    assert graphed.shape == (1, 14) and torch.equal(graphed, eager)
