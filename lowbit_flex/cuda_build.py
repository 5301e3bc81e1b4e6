"""Build ``csrc/`` into one shared library per GPU architecture, on first use, cached.

The CUDA translation units are free of torch headers: each exports ``extern "C"`` launch functions taking raw
pointers and a ``cudaStream_t`` and returning a status code (``csrc/common/status.h``). They are compiled with plain
``nvcc`` (seconds per file, in parallel), linked into ``liblowbit_flex_cuda.so`` and called through ``ctypes`` by
the kernel wrappers in ``lowbit_flex/kernels/``. No torch headers means no ABI tie to one torch version and a build
that takes seconds instead of minutes.

Cache: ``$LOWBIT_FLEX_CACHE`` (default ``~/.cache/lowbit_flex``) / ``<version>-<arch>-<hash of sources and flags>``,
built behind a file lock so concurrent processes build once. ``LOWBIT_FLEX_NO_BUILD=1`` turns a cache miss into an
error instead of a build. Build ahead of time with ``python -m lowbit_flex.cuda_build``. ``LOWBIT_FLEX_LIBRARY=<path>``
makes :func:`load` (the ``ctypes`` launchers) take that library file instead of the cache's, for an A/B of two builds
of different sources in one session (the cache key names only the sources checked out); :func:`build_torch_ops`
still links the cache's build.

CUTLASS headers come from the ``nvidia-cutlass`` wheel (``cutlass_library/source/include``).

One more library, built only on request (:func:`build_torch_ops`, ``--torch-ops``): ``csrc/torch_ops/*.cpp``
register the CUTLASS launchers as torch operators in C++, for processes that run an AOTInductor package without
lowbit_flex's Python. It includes torch headers (no CUTLASS), links ``liblowbit_flex_cuda.so`` and the torch it was
built against, and is cached next to it per torch version.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import functools
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lowbit_flex._version import __version__
from lowbit_flex.kernels.cutlass_op_schemas import TORCH_OPS_SCHEMAS

LIB_NAME = "liblowbit_flex_cuda.so"
TORCH_OPS_STEM = "liblowbit_flex_torch_ops"
# sm_90a enables wgmma/setmaxnreg; its SASS runs on sm_90 only. sm_80 SASS runs on every sm_8x GPU.
ARCH_GENCODE = {
    "sm_80": "-gencode=arch=compute_80,code=sm_80",
    "sm_90a": "-gencode=arch=compute_90a,code=sm_90a",
}


class CudaBuildError(RuntimeError):
    """The CUDA library could not be built or loaded; the message says why and what to do."""


def csrc_dir() -> Path:
    """The CUDA sources, shipped inside the package (``lowbit_flex/csrc/``, package data), so wheel, sdist and
    editable installs all build the library on first use."""
    root = Path(__file__).resolve().parent / "csrc"
    if not root.is_dir():
        raise CudaBuildError(f"CUDA sources not found at {root}: this lowbit_flex install is incomplete; reinstall it")
    return root


def sources() -> list[Path]:
    return sorted(csrc_dir().rglob("*.cu"))


def cutlass_include() -> Path:
    spec = importlib.util.find_spec("cutlass_library")  # find, not import: its package imports heavy deps
    if spec is None or spec.origin is None:
        raise CudaBuildError("CUTLASS headers not found: `pip install nvidia-cutlass` (or lowbit_flex[cuda])")
    inc = Path(spec.origin).parent / "source" / "include"
    if not (inc / "cutlass" / "cutlass.h").is_file():
        raise CudaBuildError(f"nvidia-cutlass is installed but {inc}/cutlass/cutlass.h is missing")
    return inc


def nvcc() -> str:
    for cand in (
        os.environ.get("CUDA_HOME") and Path(os.environ["CUDA_HOME"]) / "bin" / "nvcc",
        shutil.which("nvcc"),
        Path("/usr/local/cuda/bin/nvcc"),
    ):
        if cand and Path(cand).is_file():
            return str(cand)
    raise CudaBuildError("nvcc not found: install the CUDA toolkit or set CUDA_HOME")


def arch_for_capability(major: int, minor: int) -> str:
    if major == 9 and minor == 0:
        return "sm_90a"
    if major == 8:
        return "sm_80"
    raise CudaBuildError(f"no CUDA kernels are built for compute capability {major}.{minor} (sm_80 and sm_90 are)")


def nvcc_flags(arch: str) -> list[str]:
    return [
        "-O3", "-std=c++17", "-DNDEBUG", "--expt-relaxed-constexpr", "-Xcompiler=-fPIC",
        "-Xcompiler=-fvisibility=hidden",  # only the LOWBIT_API (extern "C") launchers are exported
        ARCH_GENCODE[arch], f"-I{csrc_dir()}", f"-I{cutlass_include()}",
    ]  # fmt: skip


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CudaBuildError(f"{what} failed:\n{' '.join(cmd)}\n{proc.stderr[-8000:]}")


def _compile(src: Path, obj: Path, arch: str) -> None:
    _run([nvcc(), *nvcc_flags(arch), "-c", str(src), "-o", str(obj)], f"nvcc on {src.name} for {arch}")


def _cache_key(arch: str) -> str:
    """The sources, the flags and the CUTLASS version, but not where the repository or CUTLASS are installed: a
    library built on one machine (the CPU machine builds sm_90a in ~3.5 minutes) is found on another."""
    h = hashlib.sha256()
    h.update(" ".join(f for f in nvcc_flags(arch) if not f.startswith("-I")).encode())
    h.update((cutlass_include() / "cutlass" / "version.h").read_bytes())
    root = csrc_dir()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in {".cu", ".cuh", ".h", ".hpp"}:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return f"{__version__}-{arch}-{h.hexdigest()[:16]}"


def cache_dir() -> Path:
    return Path(os.environ.get("LOWBIT_FLEX_CACHE", Path.home() / ".cache" / "lowbit_flex"))


def _build_once(lib: Path, command: str, make, *, verbose: bool) -> Path:
    """``lib``, made by ``make(tmp_dir, tmp_lib)`` unless cached. Behind the directory's file lock (concurrent
    processes build once) and moved into place atomically (readers never see a half-written library);
    ``LOWBIT_FLEX_NO_BUILD=1`` turns a cache miss into an error naming ``command``."""
    if lib.is_file():
        return lib
    if os.environ.get("LOWBIT_FLEX_NO_BUILD") == "1":
        raise CudaBuildError(f"{lib} is not built and LOWBIT_FLEX_NO_BUILD=1: run `{command}`")
    lib.parent.mkdir(parents=True, exist_ok=True)
    with open(lib.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same key
        if lib.is_file():
            return lib
        t0 = time.time()
        with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
            tmp_lib = Path(tmp) / lib.name
            make(Path(tmp), tmp_lib)
            os.replace(tmp_lib, lib)
        if verbose:
            print(f"[lowbit_flex] built {lib} in {time.time() - t0:.1f} s", file=sys.stderr)
    return lib


def build(arch: str, *, verbose: bool = True) -> Path:
    """Build (or find cached) ``liblowbit_flex_cuda.so`` for ``arch``; return its path."""

    def make(tmp: Path, tmp_lib: Path) -> None:
        srcs = sources()
        if verbose:
            print(f"[lowbit_flex] building {len(srcs)} CUDA sources for {arch} into {tmp_lib.parent.parent} ...",
                  file=sys.stderr)  # fmt: skip
        objs = [tmp / f"{i}_{s.stem}.o" for i, s in enumerate(srcs)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            list(pool.map(lambda so: _compile(so[0], so[1], arch), zip(srcs, objs)))
        _run([nvcc(), "-shared", ARCH_GENCODE[arch], *map(str, objs), "-o", str(tmp_lib)], f"linking {LIB_NAME}")

    lib = cache_dir() / _cache_key(arch) / LIB_NAME
    return _build_once(lib, "python -m lowbit_flex.cuda_build", make, verbose=verbose)


LIBRARY_ENV = "LOWBIT_FLEX_LIBRARY"  # a library file to load instead of the cache's (A/B runs)


@functools.cache
def load() -> ctypes.CDLL:
    """The CUDA library for the current GPU, built on first use (or the file ``$LOWBIT_FLEX_LIBRARY`` names). Raises
    :class:`CudaBuildError`."""
    import torch

    if not torch.cuda.is_available():
        raise CudaBuildError("the lowbit_flex CUDA library needs a CUDA GPU")
    override = os.environ.get(LIBRARY_ENV)
    if override:
        if not Path(override).is_file():
            raise CudaBuildError(f"{LIBRARY_ENV}={override} is not a file")
        return ctypes.CDLL(str(Path(override).resolve()))
    arch = arch_for_capability(*torch.cuda.get_device_capability())
    return ctypes.CDLL(str(build(arch)))


def check_status(status: int, what: str) -> None:
    """Turn a launcher's status code (``csrc/common/status.h``) into an exception."""
    if status != 0:
        msg = load().lowbit_status_string
        msg.restype = ctypes.c_char_p
        raise RuntimeError(f"{what} failed: {msg(status).decode()} (status {status})")


def torch_ops_sources() -> list[Path]:
    return sorted((csrc_dir() / "torch_ops").glob("*.cpp"))


def torch_ops_flags(defines: dict[str, str] = TORCH_OPS_SCHEMAS) -> list[str]:
    """Host-compiler flags of the torch-op TUs: torch's headers and C++ ABI, the ``-D`` strings (the op schemas)."""
    import torch
    from torch.utils import cpp_extension

    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = ["-x", "c++", "-std=c++17", "-O2", "-DNDEBUG", "-Xcompiler=-fPIC", f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    flags += [f"-I{csrc_dir()}", *(f"-I{p}" for p in cpp_extension.include_paths())]
    return flags + [f'-D{name}="{value}"' for name, value in sorted(defines.items())]


def build_torch_ops(arch: str, defines: dict[str, str] = TORCH_OPS_SCHEMAS, *, verbose: bool = True) -> Path:
    """Build (or find cached) the torch-op library for ``arch``: the ``csrc/torch_ops`` TUs compiled with
    ``defines`` (the op schemas; a test passes others) and linked against :func:`build`'s library (built first if
    needed) and torch; return its path."""
    import torch
    from torch.utils import cpp_extension

    cuda_lib = build(arch, verbose=verbose)
    flags = torch_ops_flags(defines)
    h = hashlib.sha256(f"{torch.__version__} {' '.join(flags)}".encode())
    for p in torch_ops_sources():
        h.update(p.read_bytes())
    lib = cuda_lib.parent / f"{TORCH_OPS_STEM}-{h.hexdigest()[:16]}.so"

    def make(tmp: Path, tmp_lib: Path) -> None:
        torch_libs = [f"-L{p}" for p in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu"]
        cmd = [
            nvcc(), *flags, "-shared", *map(str, torch_ops_sources()), "-o", str(tmp_lib),
            f"-L{cuda_lib.parent}", f"-l:{LIB_NAME}", *torch_libs, "-Xlinker", "-rpath,$ORIGIN",
        ]  # fmt: skip
        _run(cmd, f"building {lib.name}")

    return _build_once(lib, "python -m lowbit_flex.cuda_build --torch-ops", make, verbose=verbose)


def compile_check(archs: list[str], torch_ops: bool = False) -> None:
    """``nvcc -c`` every source for every arch (CI's compile check on a machine without a GPU), and with
    ``torch_ops`` the torch-op TUs (host code, once)."""
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(s, Path(tmp) / f"{a}_{i}.o", a) for a in archs for i, s in enumerate(sources())]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            for (src, _, arch), _ in zip(jobs, pool.map(lambda j: _compile(*j), jobs)):
                print(f"ok  {arch:7s} {src.relative_to(csrc_dir())}")
        for src in torch_ops_sources() if torch_ops else ():
            _run([nvcc(), *torch_ops_flags(), "-c", str(src), "-o", str(Path(tmp) / "torch_ops.o")], src.name)
            print(f"ok  host    {src.relative_to(csrc_dir())}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lowbit_flex.cuda_build", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=sorted(ARCH_GENCODE), help="default: the current GPU's")
    p.add_argument("--check", nargs="+", metavar="ARCH", help="only compile-check every source for these archs")
    p.add_argument("--torch-ops", action="store_true", help="also build (or check) the C++ torch-op library")
    args = p.parse_args(argv)
    try:
        if args.check:
            bad = set(args.check) - set(ARCH_GENCODE)
            if bad:
                p.error(f"--check: unknown arch {sorted(bad)}; expected {sorted(ARCH_GENCODE)}")
            compile_check(args.check, args.torch_ops)
            return
        if args.arch:
            arch = args.arch
        else:
            import torch

            if not torch.cuda.is_available():
                p.error("no CUDA GPU here: pass --arch to build for one, or --check to compile-check")
            arch = arch_for_capability(*torch.cuda.get_device_capability())
        print(build_torch_ops(arch) if args.torch_ops else build(arch))
    except CudaBuildError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
