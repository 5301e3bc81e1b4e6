"""Compile Triton kernels for a GPU architecture on a machine without a GPU.

Inside :func:`compile_launches`, every ``kernel[grid](...)`` call made by a launcher is compiled with
``triton.compile`` for ``cuda:<arch>`` (down to a cubin, with the ptxas that ships with Triton) instead of being
launched. Launchers run unchanged on CPU tensors: their shapes, dtypes and constexprs decide what is compiled. This
catches what the interpreter cannot (non-constexpr globals, type errors, unsupported dtypes for an architecture,
shared-memory overflow at compile time) before any GPU time is spent. CI runs it for sm_80 and sm_90.

Must run in a process where ``TRITON_INTERPRET`` is unset: Triton decides at decoration time whether a kernel is
interpreted. ``python -m lowbit_flex.triton_aot`` is used by ``tests/kernels/test_triton_aot.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from unittest import mock

import torch

_DTYPE = {
    torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32", torch.float64: "fp64",
    torch.int8: "i8", torch.int16: "i16", torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8",
    torch.bool: "i1", torch.float8_e4m3fn: "fp8e4nv", torch.float8_e5m2: "fp8e5",
}  # fmt: skip
_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion")


@dataclass
class Compiled:
    arch: int
    kernels: list[tuple[str, dict]] = field(default_factory=list)  # (kernel name, constexprs)
    serialized: list[tuple[str, dict]] = field(default_factory=list)  # check_wgmma: kernels ptxas serializes
    spilled: list[tuple[str, dict]] = field(default_factory=list)  # check_wgmma: maxnreg kernels that spill


# Shared memory one block may use (bytes; cudaDevAttrMaxSharedMemoryPerBlockOptin): a kernel asking more compiles
# but fails to load on the GPU (OutOfResources), so the compile check fails on it here.
SHARED_MEMORY_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}

# ptxas's note when it cannot keep WGMMAs in flight together and issues each only after the previous one finished
# (sm_90): the kernel still runs correctly, at a fraction of its tensor-core rate.
WGMMA_SERIALIZED = "C7515"


def _type_of(v: object) -> str:
    if isinstance(v, torch.Tensor):
        return "*" + _DTYPE[v.dtype]
    if isinstance(v, bool):
        return "i1"
    if isinstance(v, int):
        return "i32" if -(2**31) <= v < 2**31 else "i64"
    if isinstance(v, float):
        return "fp32"
    raise TypeError(f"cannot type Triton argument {v!r}")


def _specialized_one(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v == 1


def _divisible_by_16(v: object) -> bool:
    """What the JIT specializes on at launch: tensors (allocations are 16-byte aligned; CPU stand-ins are treated as
    such) and ints divisible by 16. Without it, AOT code would use narrower loads and more registers than the GPU's."""
    if isinstance(v, torch.Tensor):
        return True
    return isinstance(v, int) and not isinstance(v, bool) and v % 16 == 0


@contextlib.contextmanager
def compile_launches(arch: int, check_wgmma: bool = False) -> Iterator[Compiled]:
    """Compile (not launch) every Triton kernel launched inside the block, for ``sm_<arch>``. ``check_wgmma``
    (sm_90): also run ptxas verbosely on each kernel's PTX and record those whose WGMMAs it serializes
    (:data:`WGMMA_SERIALIZED`) and those compiled with a ``maxnreg`` cap that spill under it. What ptxas sees
    depends on the Triton version: check with the GPU machine's."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.errors import OutOfResources
    from triton.runtime.jit import JITFunction

    out = Compiled(arch)
    target = GPUTarget("cuda", arch, 32)

    def run(self, *args, grid, warmup, **kwargs):
        options = {k: kwargs.pop(k) for k in _OPTIONS if k in kwargs}
        bound = inspect.signature(self.fn).bind(*args, **kwargs)
        bound.apply_defaults()
        signature, constexprs, attrs = {}, {}, {}
        for i, p in enumerate(self.params):
            v = bound.arguments[p.name]
            if p.is_constexpr or v is None:
                signature[p.name], constexprs[p.name] = "constexpr", v
            elif _specialized_one(v) and not p.do_not_specialize:
                # The JIT compiles an int argument equal to 1 as the constant 1 (a unit stride makes loads
                # contiguous and vectorized): without it AOT code would load scalars where the GPU's loads vectors.
                signature[p.name], constexprs[p.name] = "constexpr", 1
            else:
                signature[p.name] = _type_of(v)
                if _divisible_by_16(v):
                    attrs[(i,)] = [["tt.divisibility", 16]]
        source = ASTSource
        if getattr(self, "is_gluon", lambda: False)():  # a Gluon kernel: its source type, made in create_binder
            from triton.experimental.gluon._runtime import GluonASTSource as source
        compiled = triton.compile(source(self, signature, constexprs, attrs), target=target, options=options)
        shared, limit = compiled.metadata.shared, SHARED_MEMORY_LIMIT.get(arch)
        if limit is not None and shared > limit:
            raise OutOfResources(shared, limit, f"shared memory ({self.fn.__name__} {constexprs})")
        out.kernels.append((self.fn.__name__, constexprs))
        if check_wgmma and arch >= 90:
            notes = _ptxas_notes(compiled.asm["ptx"], arch)
            # NONEMPTY_K=False: the kernel keeps its serialized WGMMAs on purpose (arch.register_a_wgmma_pipelines)
            if WGMMA_SERIALIZED in notes and constexprs.get("NONEMPTY_K") is not False:
                out.serialized.append((self.fn.__name__, constexprs))
            # A register cap is there to fit more programs on an SM; spilling under it costs more than it buys.
            if "maxnreg" in options and re.search(r"[1-9]\d* bytes spill stores", notes):
                out.spilled.append((self.fn.__name__, constexprs | {"maxnreg": options["maxnreg"]}))
        # Inductor types a Python float argument fp64 where the GPU has fp64 (torch._inductor.codegen.triton_utils),
        # Triton's JIT fp32: a kernel launched from a compiled graph must compile both ways.
        floats = {name: "fp64" for name, t in signature.items() if t == "fp32"}
        if floats:
            triton.compile(source(self, signature | floats, constexprs, attrs), target=target, options=options)

    capability = (arch // 10, arch % 10)
    with (
        mock.patch.object(JITFunction, "run", run),
        mock.patch("torch.cuda.get_device_capability", lambda *a, **k: capability),
    ):
        yield out


def _ptxas_notes(ptx: str, arch: int) -> str:
    """``ptxas -v``'s messages for one kernel's PTX, from the ptxas Triton's own compile used for this arch."""
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        src = f"{tmp}/k.ptx"
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [get_ptxas(arch).path, f"-arch=sm_{arch}a", "-v", src, "-o", f"{tmp}/k.cubin"]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stderr


def main(argv: list[str] | None = None) -> None:
    """``python -m lowbit_flex.triton_aot [--check-wgmma] ARCH MODULE:FUNCTION...``: run each case function under
    :func:`compile_launches` and print what was compiled; exit non-zero if a case compiled nothing, unless it
    returned ``False`` (its kernels are not launched on this arch), or with ``--check-wgmma`` if ptxas serializes
    the WGMMAs of any kernel or spills in one compiled with ``maxnreg``."""
    import argparse
    import importlib
    import os
    import sys

    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        sys.exit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled")
    p = argparse.ArgumentParser(prog="python -m lowbit_flex.triton_aot")
    p.add_argument("arch", type=int, help="e.g. 90 or 80")
    p.add_argument("cases", nargs="+", help="module:function running launchers on CPU tensors")
    p.add_argument("--check-wgmma", action="store_true",
                   help=f"fail on ptxas {WGMMA_SERIALIZED} or spills under maxnreg (sm_90)")  # fmt: skip
    args = p.parse_args(argv)
    empty, serialized, spilled = [], [], []
    for case in args.cases:
        mod, fn = case.split(":")
        with compile_launches(args.arch, args.check_wgmma) as compiled:
            applies = getattr(importlib.import_module(mod), fn)() is not False
        print(f"sm_{args.arch} {case}: {len(compiled.kernels)} kernels " + ", ".join(k for k, _ in compiled.kernels))
        if applies and not compiled.kernels:
            empty.append(case)
        # the short constexprs name the config (not the PTX strings)
        for found, kernels in ((serialized, compiled.serialized), (spilled, compiled.spilled)):
            for name, constexprs in kernels:
                found.append(f"{case} {name} " + str({k: v for k, v in constexprs.items() if len(repr(v)) < 40}))
    if empty:
        sys.exit(f"no kernel was compiled by {empty}")
    problems = [
        f"{what}:\n" + "\n".join(found)
        for what, found in (
            (f"ptxas serializes the WGMMAs ({WGMMA_SERIALIZED}) of", serialized),
            ("ptxas spills registers under maxnreg in", spilled),
        )
        if found
    ]
    if problems:
        sys.exit("\n".join(problems))


if __name__ == "__main__":
    main()
