import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

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


def _package_with(tmp_path, name: str, *flags: str):
    """A zip laid out like an AOTInductor package whose model library is a small C++ library built with ``flags``."""
    src = tmp_path / "lib.cpp"
    src.write_text('#include <string>\nextern "C" unsigned long n(const char* s) { return std::string(s).size(); }\n')
    lib = tmp_path / f"{name}.so"
    subprocess.run(["g++", "-shared", "-fPIC", *flags, str(src), "-o", str(lib)], check=True)
    package = tmp_path / f"{name}.pt2"
    with zipfile.ZipFile(package, "w") as z:
        z.write(lib, f"{name}/data/aotinductor/model/abc.wrapper.so")
        z.writestr(f"{name}/data/aotinductor/model/abc.wrapper_metadata.json", "{}")
    return package


@pytest.mark.skipif(not (shutil.which("g++") and shutil.which("readelf")), reason="needs g++ and readelf")
def test_static_libstdcxx_tells_a_private_cpp_runtime_from_the_shared_one(tmp_path):
    # The H200 machine's $CXX linked libstdc++ into every package, which then crashed at load (run 21).
    assert deploy_aoti.static_libstdcxx(_package_with(tmp_path, "dynamic")) is False
    assert deploy_aoti.static_libstdcxx(_package_with(tmp_path, "static", "-static-libstdc++")) is True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_the_loader_preloads_the_shared_libstdcxx_only_for_a_static_package(capsys, monkeypatch):
    lib = deploy_aoti.shared_libstdcxx()  # torch's own libraries need it: it is mapped in this process
    assert lib is not None and Path(lib).is_file() and "libstdc++.so" in Path(lib).name
    assert deploy_aoti.loader_env([]) is None
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    env = deploy_aoti.loader_env(["sam_encoder"])
    assert env["LD_PRELOAD"] == lib and env["PATH"] == os.environ["PATH"]
    assert "sam_encoder" in capsys.readouterr().err
    monkeypatch.setenv("LD_PRELOAD", "libuser.so")  # a preload the user set stays, after ours
    assert deploy_aoti.loader_env(["sam_encoder"])["LD_PRELOAD"] == f"{lib} libuser.so"
