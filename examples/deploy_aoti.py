"""Deploy without Python's lowbit_flex: a W4A8 Llama block and the SAM encoder through AOTInductor (issue 15).

Each model is exported with a dynamic batch dimension (``torch.export.Dim``), compiled and packaged with
``torch._inductor.aoti_compile_and_package``, then loaded in a fresh process with
``torch._inductor.aoti_load_package``, which checks that ``lowbit_flex`` was never imported there and compares the
package's outputs at batch 1 and 8 against the eager outputs saved by the building process. Models:

- ``llama_block_w4a8``: one Llama-style block of ``examples/llama_w4a8_decode.py`` (prefill of a ``--seq``-long
  sequence, no KV cache), every linear W4A8 with group-128 weight scales (``W4A8Config(group_size=128)``);
- ``sam_encoder``: the SAM ViT-B image encoder of ``examples/sam_vit.py`` with the fused ``lowbit::rel_pos_attention``.

A package whose graph still calls a ``lowbit`` op (an opaque op: the AOTInductor proxy executor calls it through
the dispatcher by name) needs the op registered in the loading process. On CUDA those are the CUTLASS GEMMs where
W4A8 picks them (``lowbit::s8s4_gemm_cutlass``, ``lowbit::s8s8_groupwise_gemm_cutlass``): the loader then loads their
C++ registration library (``lowbit_flex.ops.cutlass_gemm.torch_ops_library()``, built by the building process), still
without importing ``lowbit_flex``. Any other ``lowbit`` op would make it import ``lowbit_flex`` and say which op
forced it. On CPU no op is left (every op traces into ATen ops; see docs/deploy.md).

    python -m examples.deploy_aoti --device cpu --tiny      # tiny configs, a smoke test on CPU (about a minute)
    python -m examples.deploy_aoti --device cuda            # Llama-2-7B block dims and SAM ViT-B, bf16

Also prints latency: eager, ``torch.compile`` and the AOTInductor package, per batch (medians; on CPU with the tiny
configs only a smoke number). This module imports nothing but torch at the top: its ``--load`` mode is the fresh
process that must not import lowbit_flex.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

BATCHES = (1, 8)
MODELS = ("llama_block_w4a8", "sam_encoder")
# bf16 package vs bf16 eager: Inductor fuses and rounds differently (the SAM encoder lands near 1e-2 relative to
# float64 in bf16, see tests/examples/test_sam_image_encoder.py); a wrong weight or layout costs O(1).
BF16_REL_TOL = 2e-2


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``||out - ref|| / ||ref||`` in float64 (here rather than lowbit_flex.testing: the loader must not import it)."""
    out, ref = out.double(), ref.double()
    return float((out - ref).norm() / ref.norm().clamp_min(1e-300))


def progress(msg: str) -> None:
    """A step reached, on stderr at once: a run cut short or killed still shows where it was."""
    print(f"[deploy_aoti {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median_ms(fn, x: torch.Tensor, reps: int) -> float:
    fn(x)  # warm-up (compiles under torch.compile)
    times = []
    for _ in range(reps):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# --- building side (imports lowbit_flex and the example models) ---------------------------------------------------


def llama_block(device: str, tiny: bool, seq_len: int) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """One block of ``examples/llama_w4a8_decode.py`` as a prefill of ``seq_len`` tokens, W4A8 group 128, bf16.
    Returns the module and the shape of one sample of its input (``(seq_len, dim)``)."""
    from dataclasses import replace

    from torch import nn

    import lowbit_flex
    from examples import llama_w4a8_decode as llama

    # The decode example's TINY has ffn_dim 352, which group 128 does not divide (quantize_ would keep w2 in bf16).
    args = replace(llama.TINY, ffn_dim=384) if tiny else llama.LLAMA2_7B

    class NoCache(nn.Module):
        """Stands in for the static KV cache (whose batch is fixed): keys and values come from this call only."""

        def update(self, pos, k, v):
            return k, v

    class PrefillBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = llama.Block(args)
            self.block.cache = NoCache()
            self.register_buffer("freqs", llama.rope_table(seq_len, args.head_dim, args.rope_base))
            self.register_buffer("mask", torch.ones(seq_len, seq_len, dtype=torch.bool).tril())
            self.register_buffer("pos", torch.arange(seq_len))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(x, self.pos, self.freqs, self.mask)

    torch.manual_seed(0)
    model = PrefillBlock()
    model.block.to(torch.bfloat16)  # freqs stay float32, as in the decode example
    lowbit_flex.quantize_(model, lowbit_flex.W4A8Config(group_size=128))
    return model.to(device).eval(), (seq_len, args.dim)


def sam_encoder(device: str, tiny: bool) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """SAM's ViT image encoder (random weights) with the fused rel-pos attention op, bf16."""
    from examples.sam_vit import TINY, VIT_B, AttnImpl, ImageEncoderViT

    cfg = TINY if tiny else VIT_B
    torch.manual_seed(0)
    model = ImageEncoderViT(cfg).set_attention(AttnImpl.FUSED)
    return model.to(device, torch.bfloat16).eval(), (3, cfg.img_size, cfg.img_size)


def lowbit_ops_in_package(path: Path) -> list[str]:
    """The ``lowbit`` ops the package calls at run time: AOTInductor lists every op it does not compile (extern
    kernels the proxy executor calls by name) in the ``.json`` next to the wrapper's source."""
    with zipfile.ZipFile(path) as z:
        nodes = [
            n for name in z.namelist() if name.endswith(".wrapper.json") for n in json.loads(z.read(name))["nodes"]
        ]
    return sorted({n["node"]["target"] for n in nodes if n["node"]["target"].startswith("lowbit::")})


def static_libstdcxx(package: Path) -> bool:
    """Whether the package's model library carries its own libstdc++ (linked statically: no ``libstdc++`` among its
    ``NEEDED`` libraries). AOTInductor compiles it with ``$CXX`` when set; a GCC that links its C++ runtime statically
    (seen on the project's GPU machine: ``CXX=/opt/gcc/bin/g++``) makes a library whose private std::locale clashes
    with the process's shared libstdc++: ``aoti_load_package`` then dies with SIGSEGV in std::regex, inside the
    runner's constructor, for any model (docs/deploy.md). ``False`` where ``readelf`` is missing."""
    readelf = shutil.which("readelf")
    if readelf is None:
        return False
    with zipfile.ZipFile(package) as z, tempfile.TemporaryDirectory() as tmp:
        libs = [z.extract(n, tmp) for n in z.namelist() if n.endswith(".so")]
        dynamic = [
            subprocess.run([readelf, "-d", lib], capture_output=True, text=True, check=True).stdout for lib in libs
        ]
    return any("libstdc++" not in d for d in dynamic)


def shared_libstdcxx() -> str | None:
    """The shared libstdc++ this process runs with (Linux: from ``/proc/self/maps``), or ``None``."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if "/libstdc++.so" in line}
    return min(paths) if paths else None


def loader_env(static: list[str]) -> dict[str, str] | None:
    """The loading process's environment: with a package that carries a static libstdc++ (``static`` names them),
    the shared one is preloaded (ahead of any preload already set), which makes that package load (checked on the
    H200, run 21); say so loudly, since a C++ server would need the same or, better, a package built with a compiler
    that links libstdc++ dynamically."""
    if not static:
        return None
    lib = shared_libstdcxx()
    cxx = os.environ.get("CXX", "the default C++ compiler")
    action = f"The loader preloads {lib}" if lib else "The shared libstdc++ was not found to preload"
    print(
        f"WARNING: {', '.join(static)}: the package's model library links libstdc++ statically (compiled with {cxx}), "
        f"which crashes at load next to the shared libstdc++. {action}; for deployment, package with a compiler "
        "that links libstdc++ dynamically (e.g. CXX=/usr/bin/g++). See docs/deploy.md.",
        file=sys.stderr,
        flush=True,
    )
    if lib is None:
        return None
    preload = " ".join(p for p in (lib, os.environ.get("LD_PRELOAD", "")) if p)
    return {**os.environ, "LD_PRELOAD": preload}


@torch.no_grad()
def build(name: str, model: torch.nn.Module, sample: tuple[int, ...], device: str, out: Path, reps: int) -> dict:
    """Export with a dynamic batch, package, save the inputs and the eager outputs; time eager."""
    gen = torch.Generator().manual_seed(1)
    inputs = {b: torch.randn(b, *sample, generator=gen).to(device, torch.bfloat16) for b in BATCHES}
    expected = {b: model(x) for b, x in inputs.items()}
    batch = torch.export.Dim("batch", min=1, max=64)
    progress(f"{name}: exporting")
    t0 = time.perf_counter()
    # The largest batch as the example (export specializes a dimension whose example size is 1): with a dynamic
    # batch, the W4A8 dispatch picks its kernels for every batch by the example's rows (docs/deploy.md).
    ep = torch.export.export(model, (inputs[max(BATCHES)],), dynamic_shapes=({0: batch},))
    t1 = time.perf_counter()
    progress(f"{name}: exported in {t1 - t0:.1f} s, packaging")
    package = torch._inductor.aoti_compile_and_package(ep, package_path=str(out / f"{name}.pt2"))
    t2 = time.perf_counter()
    progress(f"{name}: packaged in {t2 - t1:.1f} s")
    ops = lowbit_ops_in_package(Path(package))
    io = {"inputs": inputs, "expected": expected, "lowbit_ops": ops, "cpp_ops": [], "cpp_library": None}
    if device == "cuda" and ops:
        from lowbit_flex.ops import cutlass_gemm

        io["cpp_ops"], io["cpp_library"] = cutlass_gemm.CPP_OPS, str(cutlass_gemm.torch_ops_library())
    torch.save(io, out / f"{name}.io.pt")
    row = {
        "model": name,
        "export s": t1 - t0,
        "package s": t2 - t1,
        "lowbit ops in package": ops,
        "static libstdc++": static_libstdcxx(Path(package)),
    }
    for b, x in inputs.items():
        row[f"eager ms b{b}"] = median_ms(model, x, reps)
    return row


@torch.no_grad()
def time_compiled(name: str, model: torch.nn.Module, out: Path, reps: int) -> dict:
    """``torch.compile`` latency per batch (after the package check: compiling is the slow part of a run)."""
    inputs = torch.load(out / f"{name}.io.pt")["inputs"]
    compiled = torch.compile(model)
    return {f"compile ms b{b}": median_ms(compiled, x, reps) for b, x in inputs.items()}


# --- loading side (a fresh process: torch only, unless the package calls a lowbit op) -----------------------------


@torch.no_grad()
def load_and_check(out: Path, reps: int) -> list[dict]:
    # Timed apart from the first package's load: Inductor's Python side is imported once per process.
    t0 = time.perf_counter()
    import torch._inductor.package

    progress(f"imported torch._inductor in {time.perf_counter() - t0:.1f} s")
    rows = []
    for package in sorted(out.glob("*.pt2")):
        io = torch.load(package.with_suffix(".io.pt"))
        ops = set(io["lowbit_ops"])
        if ops and ops <= set(io["cpp_ops"]):
            progress(f"{package.stem}: loading the C++ op library, the package calls {', '.join(sorted(ops))}")
            torch.ops.load_library(io["cpp_library"])  # registers them; lowbit_flex is not imported
        elif ops:
            progress(f"{package.stem}: importing lowbit_flex, the package calls {', '.join(sorted(ops))}")
            import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit for the proxy executor)
        if not ops - set(io["cpp_ops"]):
            assert "lowbit_flex" not in sys.modules, "the loader imported lowbit_flex"
        progress(f"{package.stem}: loading the package")
        t0 = time.perf_counter()
        runner = torch._inductor.aoti_load_package(str(package))
        row = {
            "model": package.stem,
            "load s": time.perf_counter() - t0,
            "lowbit_flex imported": "lowbit_flex" in sys.modules,
        }
        for b, x in io["inputs"].items():
            progress(f"{package.stem}: running batch {b}")
            y = runner(x)
            row[f"rel err b{b}"] = rel_error(y, io["expected"][b])
            row[f"shape ok b{b}"] = (
                tuple(y.shape) == tuple(io["expected"][b].shape) and y.dtype == io["expected"][b].dtype
            )
            row[f"aoti ms b{b}"] = median_ms(runner, x, reps)
        rows.append(row)
    return rows


def run(
    device: str, tiny: bool, out: Path, seq_len: int, reps: int, models: tuple[str, ...], compile: bool = True
) -> list[dict]:
    """Build every model in this process, load and check them in a fresh one; one merged row per model."""
    builders = {
        "llama_block_w4a8": lambda: llama_block(device, tiny, seq_len),
        "sam_encoder": lambda: sam_encoder(device, tiny),
    }
    built, modules = {}, {}
    for name in models:
        modules[name], sample = builders[name]()
        built[name] = build(name, modules[name], sample, device, out, reps)
    # faulthandler: a crash in native code (the package, an op library) still prints where it happened
    cmd = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()), "--load", str(out), "--reps", str(reps)]
    env = loader_env([name for name in models if built[name]["static libstdc++"]])
    # its stderr (progress, warnings, a native crash's stack) goes straight through: shown even if it hangs
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"the loading process failed (exit status {proc.returncode}):\n{proc.stdout[-3000:]}")
    loaded = json.loads(proc.stdout.splitlines()[-1])
    for line in proc.stdout.splitlines()[:-1]:
        print(line)
    rows = [{**built[r["model"]], **r} for r in loaded]
    if compile:
        print_rows(rows)  # before compiling: a run cut short still reports the package
        rows = [{**r, **time_compiled(r["model"], modules[r["model"]], out, reps)} for r in rows]
    return rows


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(" | ".join(f"{k}: {v:.3g}" if isinstance(v, float) else f"{k}: {v}" for k, v in r.items()), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tiny", action="store_true", help="tiny configs (CPU smoke test)")
    p.add_argument("--seq", type=int, default=None, help="Llama block sequence length (default 16 tiny, else 128)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    p.add_argument("--reps", type=int, default=None, help="timed calls per measurement (default 3 tiny, else 20)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile timings")
    p.add_argument("--out", type=Path, default=None, help="where packages go (default: a temporary directory)")
    p.add_argument("--load", type=Path, default=None, help=argparse.SUPPRESS)  # the fresh process
    a = p.parse_args()
    reps = a.reps or (3 if a.tiny or a.load else 20)
    if a.load is not None:
        print(json.dumps(load_and_check(a.load, reps)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = a.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        rows = run(a.device, a.tiny, out, a.seq or (16 if a.tiny else 128), reps, tuple(a.models), not a.no_compile)
    print_rows(rows)
    bad = [
        r["model"] for r in rows for b in BATCHES if not (r[f"rel err b{b}"] <= BF16_REL_TOL and r[f"shape ok b{b}"])
    ]
    if bad:
        sys.exit(f"package outputs differ from eager (tolerance {BF16_REL_TOL}): {sorted(set(bad))}")


if __name__ == "__main__":
    main()
