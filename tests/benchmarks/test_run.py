"""``benchmarks/run.py`` when a device call's ``timeout`` sends SIGTERM mid-benchmark: the rows measured so far
are written, the later benchmarks do not start, and the run fails."""

import json
import os
import signal
import time
import types

import pytest

from benchmarks import harness, run


def test_sigterm_keeps_the_rows_measured_so_far(monkeypatch, tmp_path, capsys):
    started = []

    def fake(name, rows):
        def bench_run(bench):
            started.append(name)
            table = bench.table(f"{name} table", baseline="base")
            for i in range(rows):
                table.add({"i": i}, {"base": 1.0, "method": 0.5})
                if name == "bench_b" and i == 1:
                    try:  # as a benchmark's own fallback (harness.time_ms) would: it must not swallow the cut
                        os.kill(os.getpid(), signal.SIGTERM)  # what `timeout` sends
                        time.sleep(5)  # the handler runs here at the latest
                    except Exception:
                        pytest.fail("the cut was caught as an Exception")

        return types.SimpleNamespace(run=bench_run)

    modules = {"bench_a": fake("bench_a", 2), "bench_b": fake("bench_b", 5), "bench_c": fake("bench_c", 1)}
    monkeypatch.setattr(run.torch.cuda, "is_available", lambda: True)
    real_import = run.importlib.import_module
    fake_import = lambda n, *a, **k: modules[n[11:]] if n.startswith("benchmarks.bench_") else real_import(n, *a, **k)
    monkeypatch.setattr(run.importlib, "import_module", fake_import)
    monkeypatch.setattr(run.Path, "glob", lambda self, pattern: [run.Path(f"{n}.py") for n in modules])
    monkeypatch.setattr(run.Bench, "_plot", lambda self: None)
    monkeypatch.setattr(harness, "environment", lambda: {"gpu": "none"})
    old = signal.getsignal(signal.SIGTERM)
    try:
        assert run.main(["--out", str(tmp_path)]) == 1
    finally:
        signal.signal(signal.SIGTERM, old)

    assert started == ["bench_a", "bench_b"]
    tables = {t["name"]: t for t in json.loads((tmp_path / "results.json").read_text())["tables"]}
    assert list(tables) == ["bench_a table", "bench_b table"]
    assert len(tables["bench_a table"]["rows"]) == 2
    assert len(tables["bench_b table"]["rows"]) == 2  # rows 0 and 1, added before the signal
    assert "bench_b: cut short" in capsys.readouterr().out


def test_selected_names_default_to_all_and_reject_typos(monkeypatch):
    selected_names = harness.selected_names
    choices = ("main", "host", "sweep")
    monkeypatch.delenv("LOWBIT_BENCH_TEST_NAMES", raising=False)
    assert selected_names("LOWBIT_BENCH_TEST_NAMES", choices) == ["main", "host", "sweep"]
    monkeypatch.setenv("LOWBIT_BENCH_TEST_NAMES", "sweep,main")
    assert selected_names("LOWBIT_BENCH_TEST_NAMES", choices) == ["sweep", "main"]
    monkeypatch.setenv("LOWBIT_BENCH_TEST_NAMES", "main,swep")
    with pytest.raises(ValueError, match=r"LOWBIT_BENCH_TEST_NAMES: expected names from .*got \['swep'\]"):
        selected_names("LOWBIT_BENCH_TEST_NAMES", choices)


@pytest.mark.parametrize(
    "env, value, message",
    [
        ("LOWBIT_BENCH_REL_POS_CONFIGS", "rows M64,glon", r"LOWBIT_BENCH_REL_POS_CONFIGS: .*\['glon'\]"),
        ("LOWBIT_BENCH_REL_POS_ROUNDS", "0", r"LOWBIT_BENCH_REL_POS_ROUNDS: expected a count >= 1, got 0"),
    ],
)
def test_rel_pos_sweep_rejects_a_typo_before_timing(monkeypatch, tmp_path, env, value, message):
    """The sweep's config filter and round count fail with the variable's name before any input is made, rather than
    timing the table's configs alone."""
    from benchmarks import bench_rel_pos_attention as bench_rel_pos

    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=message):
        bench_rel_pos._config_sweep(harness.Bench(tmp_path), bench_rel_pos.SHAPES[:1])
