"""``benchmarks/bench_hf_generate.py`` on a tiny random Llama on CPU, without compiling: the code path of the H200
run (save, quantize on load, static-cache ``generate``, the tables), minus CUDA. Timings are only checked to be
finite and positive."""

import math
import time

import pytest

transformers = pytest.importorskip("transformers")

from lowbit_flex.nn import W4A8Config, W4A8Linear  # noqa: E402  (after the importorskip)


@pytest.fixture(scope="module")
def bench():
    from benchmarks import bench_hf_generate

    return bench_hf_generate


def test_run_on_a_tiny_llama(bench, monkeypatch, tmp_path):
    from benchmarks.harness import Bench

    n_new, compare, results = 6, bench.compare, {}
    configs = bench.CONFIGS | {"broken": "W4A8Config"}  # LowbitConfig refuses a string: this model must fail alone

    def tiny_compare(*args, **kwargs):
        results.update(compare(bench.TINY, "cpu", n_new, compile=False, configs=configs, repeats=1))
        return results

    monkeypatch.setattr(bench, "compare", tiny_compare)
    out = Bench(tmp_path)
    bench.run(out)

    assert list(results) == list(configs)
    assert results["broken"]["error"].startswith("TypeError: quant_type: expected one of")
    for name in bench.CONFIGS:
        r = results[name]
        assert "error" not in r, (name, r.get("error"))
        assert r["tokens"].shape == (1, bench.PROMPT_LEN + n_new)
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in ("tok/s", "decode tok/s")), r
        assert "eager tok/s" not in r  # timed next to a compiled run only
        assert r["logits"].isfinite().all()
    assert results["bf16"]["lowbit modules"] == {} and results["bf16"]["logits rel. err"] == 0
    n = 7 * bench.TINY["num_hidden_layers"]  # q, k, v, o, gate, up, down; lm_head stays bf16
    assert results["w4a8"]["lowbit modules"] == {W4A8Linear.__name__: n}
    assert results["w4a8 g128"]["lowbit modules"] == {f"{W4A8Linear.__name__} g128": n}
    for name in ("w4a8", "w4a8 g128"):
        assert 0 < results[name]["logits rel. err"] < 0.5 and 0 <= results[name]["same tokens"] <= 1

    ratios, details = out.tables
    assert [set(r["times"]) for r in ratios.rows] == [set(bench.CONFIGS)] * 2  # no eager row: nothing timed
    assert [r["case"]["model"] for r in details.rows] == list(configs)
    assert details.rows[-1]["extra"]["error"] == results["broken"]["error"]
    md = out.write()
    assert "w4a8 g128 ×" in md and "W4A8Linear g128 ×14" in md


def test_models_that_no_longer_fit_the_deadline_are_skipped(bench):
    configs = {"bf16": None, "w4a8": W4A8Config()}
    results = bench.compare(bench.TINY, "cpu", 2, compile=False, configs=configs, repeats=1, deadline=time.monotonic())
    assert "tok/s" in results["bf16"]  # the first model always runs
    assert results["w4a8"]["error"].startswith("skipped: ")
