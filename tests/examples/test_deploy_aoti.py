import pytest

from examples import deploy_aoti


@pytest.mark.slow
def test_tiny_cpu_packages_load_without_lowbit_flex_and_match_eager(tmp_path):
    """Both tiny models exported with a dynamic batch, packaged by AOTInductor (two C++ builds: ~90 s cold on two
    cores), loaded in a fresh process that never imports lowbit_flex, equal to eager at batch 1 and 8 within bf16
    rounding (measured: 4e-3 for the W4A8 block, 8e-3 for the encoder; a wrong weight or layout costs O(1))."""
    rows = deploy_aoti.run("cpu", True, tmp_path, seq_len=16, reps=1, models=deploy_aoti.MODELS, compile=False)
    assert [r["model"] for r in rows] == sorted(deploy_aoti.MODELS)
    for r in rows:
        assert r["lowbit ops in package"] == [] and r["lowbit_flex imported"] is False, r
        for b in deploy_aoti.BATCHES:
            assert r[f"shape ok b{b}"] and r[f"rel err b{b}"] <= deploy_aoti.BF16_REL_TOL, r
            assert r[f"aoti ms b{b}"] > 0 and r[f"eager ms b{b}"] > 0
