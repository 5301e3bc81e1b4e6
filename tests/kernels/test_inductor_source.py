"""Every Triton kernel's source as Inductor compiles it: self-contained.

A compiled graph (``torch.compile``, AOTInductor) does not import our modules; Inductor copies each user kernel and
the JIT helpers it calls into a module of its own, under the helpers' own names, plus the constexpr and Triton
globals they read. A kernel that reads anything else (an alias of a helper, a plain Python global) works eagerly and
fails only when a compiled graph is built on the GPU. This checks each copy on the CPU.

The check runs in a child process without ``TRITON_INTERPRET``: under the interpreter ``triton.jit`` makes
interpreted functions, which Inductor does not copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def _inductor_copy_problems(tmp: str) -> dict[str, list[str]]:
    """{module.function: [undefined global names in Inductor's copy, "function: name"]} for every Triton (not Gluon:
    traced graphs launch the Triton plans) function of ``lowbit_flex.kernels``; the copies are written under
    ``tmp``."""
    import builtins
    import dis
    import importlib.util
    import pkgutil

    from torch._inductor.codegen.triton import TritonKernel
    from torch._inductor.codegen.wrapper import user_defined_triton_kernel_transitive_closure_source_code
    from triton.experimental.gluon._runtime import GluonJITFunction
    from triton.runtime.jit import JITFunction

    import lowbit_flex.kernels

    problems = {}
    for info in pkgutil.iter_modules(lowbit_flex.kernels.__path__):
        mod = importlib.import_module(f"lowbit_flex.kernels.{info.name}")
        for name, fn in vars(mod).items():
            if not isinstance(fn, JITFunction) or isinstance(fn, GluonJITFunction) or fn.fn.__module__ != mod.__name__:
                continue
            # The head of Inductor's generated module, then its copy of the function (Inductor writes the decorator
            # itself) and of everything it calls.
            source = TritonKernel.gen_common_triton_imports() + "\n@triton.jit\n"
            source += user_defined_triton_kernel_transitive_closure_source_code(fn)
            path = os.path.join(tmp, f"{info.name}__{name}.py")  # triton.jit reads the source back from its file
            with open(path, "w") as f:
                f.write(source)
            spec = importlib.util.spec_from_file_location(f"inductor_copy_{info.name}__{name}", path)
            copy = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(copy)
            namespace = vars(copy)
            copied = {n: obj for n, obj in namespace.items() if isinstance(obj, JITFunction)}
            missing = [] if name in copied else [f"{name} itself"]
            missing += sorted(
                {
                    f"{fname}: {inst.argval}"
                    for fname, obj in copied.items()
                    for inst in dis.Bytecode(obj.fn)
                    if inst.opname == "LOAD_GLOBAL"
                    and inst.argval not in namespace
                    and not hasattr(builtins, inst.argval)
                }
            )
            problems[f"{info.name}.{name}"] = missing
    return problems


def test_inductor_copy_of_every_kernel_defines_every_global_it_reads():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    problems = json.loads(run.stdout.splitlines()[-1])
    # The check found the kernels (a broken walk would pass vacuously).
    assert {"rel_pos_attention._rel_pos_attention_kernel", "s8s4_linear._s8s4_matmul_kernel"} <= problems.keys()
    bad = {name: missing for name, missing in problems.items() if missing}
    assert not bad, f"Inductor's copies read undefined globals: {bad}"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(_inductor_copy_problems(tmp)))
