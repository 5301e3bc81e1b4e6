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


def _aot_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


# The case that compiles longest (about half of the sm_90 run on a CI machine) starts first, so that the others
# share the remaining cores meanwhile.
_LONGEST_CASE = "case_rel_pos_attention"


@pytest.mark.parametrize("arch", [80, 90])
def test_triton_kernels_compile(arch):
    # sm_90 also asks ptxas whether it serializes any kernel's WGMMAs (with this machine's Triton; the GPU machine's
    # version can differ: docs/gpu_workflow.md). One process per case, as many at once as there are cores: the
    # suite itself runs in one process, so the others would sit idle through the longest test of the suite.
    from concurrent.futures import ThreadPoolExecutor

    cases = sorted(_cases(), key=lambda c: c != _LONGEST_CASE)
    assert cases[0] == _LONGEST_CASE
    check = ["--check-wgmma"] if arch == 90 else []

    def compile_case(case: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "lowbit_flex.triton_aot", *check, str(arch), f"aot_cases:{case}"]
        return subprocess.run(command, env=_aot_env(), capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=max(1, min(len(cases), os.cpu_count() or 1))) as pool:
        procs = dict(zip(cases, pool.map(compile_case, cases), strict=True))
    failed = {case: proc for case, proc in procs.items() if proc.returncode != 0}
    assert not failed, "\n".join(f"{c}: {p.stdout[-2000:]}{p.stderr[-6000:]}" for c, p in failed.items())


def test_check_wgmma_fails_naming_the_serialized_kernel():
    # ptxas's verdict replaced by one that flags the split-K reduce kernel: the run must fail and name it.
    script = (
        "import lowbit_flex.triton_aot as t\n"
        "t._ptxas_notes = lambda ptx, arch: 'ptxas info : (C7515) serialized' if 'split_k_reduce' in ptx else ''\n"
        "t.main(['--check-wgmma', '90', 'aot_cases:case_common'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=_aot_env(), capture_output=True, text=True)
    assert proc.returncode != 0
    assert "C7515" in proc.stderr and "_split_k_reduce_kernel" in proc.stderr, proc.stderr[-4000:]


def test_check_wgmma_records_spills_only_under_maxnreg(tmp_path):
    # ptxas's verdict replaced by one that reports spills for every kernel: only the launch with a register cap is
    # recorded (a cap is there to fit more programs on an SM; spilling under it defeats it).
    script = (
        "import torch, triton, triton.language as tl\n"
        "import lowbit_flex.triton_aot as t\n"
        "t._ptxas_notes = lambda ptx, arch: '0 bytes stack frame, 24 bytes spill stores, 24 bytes spill loads'\n"
        "@triton.jit\n"
        "def copy(x, y, N: tl.constexpr):\n"
        "    tl.store(y + tl.arange(0, N), tl.load(x + tl.arange(0, N)))\n"
        "with t.compile_launches(90, check_wgmma=True) as c:\n"
        "    x = torch.empty(64)\n"
        "    copy[(1,)](x, x, N=64)\n"
        "    copy[(1,)](x, x, N=32, maxnreg=128)\n"
        "assert len(c.kernels) == 2, c.kernels\n"
        "assert [(n, k['N'], k['maxnreg']) for n, k in c.spilled] == [('copy', 32, 128)], c.spilled\n"
    )
    (tmp_path / "spills.py").write_text(script)  # Triton reads a kernel's source from its file
    proc = subprocess.run([sys.executable, str(tmp_path / "spills.py")], env=_aot_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_unit_ints_compile_as_constants_like_the_jit():
    # The JIT compiles an int argument equal to 1 as the constant 1 (a unit stride makes loads vectorized): AOT code
    # must too, or its register and shared-memory figures differ from the GPU's. The quantizer of lowbit attention
    # loads rows with a unit last stride: 16-byte vector loads (ld.global.v4 or cp.async of 16 bytes), not scalars.
    script = (
        "import torch, triton\n"
        "import lowbit_flex.triton_aot as t\n"
        "from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton\n"
        "asm = []\n"
        "real = triton.compile\n"
        "def keep(*a, **k):\n"
        "    c = real(*a, **k); asm.append(c.asm['ptx']); return c\n"
        "triton.compile = keep\n"
        "with t.compile_launches(90) as out:\n"
        "    q = torch.empty(1, 2, 256, 128, dtype=torch.bfloat16)\n"
        "    quantize_qkv_triton(q, q, q, torch.float8_e4m3fn, True, True)\n"
        "name, constexprs = out.kernels[0]\n"
        "assert constexprs['stride_qd'] == 1 and constexprs['stride_kd'] == 1, constexprs\n"
        "assert 'ld.global.v4' in asm[0] and 'ld.global.b16' not in asm[0]\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], env=_aot_env(), capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-4000:]
