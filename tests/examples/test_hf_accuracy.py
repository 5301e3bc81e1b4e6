import pytest
import torch

transformers = pytest.importorskip("transformers")


def test_accuracy_rows_on_a_tiny_random_llama(tmp_path):
    from examples import hf_accuracy
    from lowbit_flex.nn import FPxWeightOnlyConfig, W4A8Config

    config = transformers.LlamaConfig(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(1))
    configs = {"W4A8": W4A8Config(), "FP4": FPxWeightOnlyConfig(2, 1)}
    rows = hf_accuracy.accuracy(tmp_path, ids, configs, "cpu", torch.bfloat16)
    assert [r["config"] for r in rows] == ["float (bfloat16)", "W4A8", "FP4"]
    assert rows[0]["logits rel. error"] == 0 and all(0 < r["logits rel. error"] < 1 for r in rows[1:])
    assert all(r["perplexity"] > 1 and 0 <= r["top-1 agreement"] <= 1 for r in rows)
    assert hf_accuracy.table(rows).count("\n") == 4


def test_configs_filter_rejects_a_name_that_matches_nothing(capsys):
    """--configs is checked before any model is loaded, and the error lists the names there are."""
    from examples import hf_accuracy

    with pytest.raises(SystemExit):
        hf_accuracy.main(["--model", "unused", "--configs", "W8A8"])
    assert "W4A8 group 64, multipliers" in capsys.readouterr().err
