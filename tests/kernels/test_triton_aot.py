"""Compile every Triton kernel for sm_80 and sm_90 without a GPU (see ``lowbit_flex/triton_aot.py``)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import lowbit_flex

HERE = pathlib.Path(__file__).parent
KERNELS = pathlib.Path(lowbit_flex.__file__).parent / "kernels"


def _cases() -> list[str]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("aot_cases", HERE / "aot_cases.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return sorted(n for n in dir(mod) if n.startswith("case_"))


def test_every_kernel_module_has_a_case():
    # Modules that launch kernels (`name[grid](...)`, `wrap_triton(name)[grid](...)`, or a cached `PlanLaunch(...)`
    # plan); device-function modules compile through their callers.
    launch = re.compile(r"[\w)]\[[^\]]+\]\(|\bPlanLaunch\(")
    modules = {p.stem for p in KERNELS.glob("*.py") if launch.search(p.read_text())}
    source = (HERE / "aot_cases.py").read_text()
    missing = sorted(m for m in modules if f"lowbit_flex.kernels.{m}" not in source)
    assert not missing, f"add a case to tests/kernels/aot_cases.py for {missing}"


@pytest.mark.parametrize("arch", [80, 90])
def test_triton_kernels_compile(arch):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    cases = [f"aot_cases:{c}" for c in _cases()]
    proc = subprocess.run(
        [sys.executable, "-m", "lowbit_flex.triton_aot", str(arch), *cases], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
