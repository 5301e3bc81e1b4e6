"""``LOWBIT_FLEX_LIBRARY`` (``lowbit_flex.cuda_build.load``): the named library file is loaded instead of the
cache's, without a build; a name that is not a file is an error naming the variable. Runs on any machine: CUDA's
presence is patched in and the loaded file is torch's own extension library."""

from pathlib import Path

import pytest
import torch

from lowbit_flex import cuda_build


@pytest.fixture
def fresh_load(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def no_build(arch, **kw):
        raise AssertionError(f"build({arch}) called although {cuda_build.LIBRARY_ENV} is set")

    monkeypatch.setattr(cuda_build, "build", no_build)
    cuda_build.load.cache_clear()
    yield cuda_build.load
    cuda_build.load.cache_clear()  # the next caller builds (or finds) the real library


def test_the_named_file_is_loaded_without_a_build(fresh_load, monkeypatch):
    lib_file = Path(torch._C.__file__).resolve()
    monkeypatch.setenv(cuda_build.LIBRARY_ENV, str(lib_file))
    lib = fresh_load()
    assert Path(lib._name) == lib_file


def test_a_missing_file_is_an_error_naming_the_variable(fresh_load, monkeypatch, tmp_path):
    monkeypatch.setenv(cuda_build.LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(cuda_build.CudaBuildError, match="LOWBIT_FLEX_LIBRARY=.*missing.so is not a file"):
        fresh_load()
