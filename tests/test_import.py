import subprocess
import sys


def test_import_is_light():
    """`import lowbit_flex` must not touch CUDA, build or compile anything, nor import our kernel modules (each
    compiles Triton kernels on first use) or transformers (the optional `hf` extra: only `lowbit_flex.hf` imports
    it). Of the kernels package only `arch` (torch-only capability checks the ops call) and `cutlass_op_schemas`
    (the CUTLASS ops' schema strings) are imported. Triton's Python package itself is imported where installed:
    `torch.library.triton_op` scans the W4A8 op's body for kernels when it registers the op."""
    code = (
        "import sys, torch, lowbit_flex\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialised'\n"
        "allowed = {'lowbit_flex.kernels', 'lowbit_flex.kernels.arch', 'lowbit_flex.kernels.cutlass_op_schemas'}\n"
        "bad = [m for m in sys.modules if m.startswith('lowbit_flex.kernels')]\n"
        "bad = [m for m in bad if m not in allowed]\n"
        "assert not bad, bad\n"
        "assert hasattr(torch.ops.lowbit, 'quantize_int8_rowwise')\n"
        "assert 'transformers' not in sys.modules, 'transformers imported (only lowbit_flex.hf may)'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_top_level_ops_package_installed():
    """Only `lowbit_flex` is a top-level package: `ops`/`score_mods` live under it."""
    import lowbit_flex

    code = "import importlib.util as u; print(u.find_spec('score_mods'), u.find_spec('ops'))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd="/")
    assert out.stdout.strip() == "None None", out.stdout
    assert lowbit_flex.ops.__name__ == "lowbit_flex.ops"
