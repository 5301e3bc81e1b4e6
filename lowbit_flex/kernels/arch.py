"""Where the kernels run: the Triton interpreter flag, whether a call is traced, GPU architecture facts read once
per device, and whether the toolchain may pipeline WGMMAs with register operands
(:func:`register_a_wgmma_pipelines`).

Torch-only at import (Triton is imported inside the toolchain checks, on first use), so op files and
``attention/`` may import it at module level without making ``import lowbit_flex`` heavier. Every capability check
in the package goes through here: launchers read the architecture with ``torch.cuda.get_device_capability`` (which
``lowbit_flex.triton_aot`` patches to compile for sm_80 / sm_90 without a GPU), so :func:`capability` caches per
(device index, reader function): a patched reader gets its own entries (the ptxas version is cached per arch
number, which follows the patch).
"""

from __future__ import annotations

import functools
import os

import torch

# Triton's interpreter runs kernels on CPU tensors; grids there are kept tiny, so a small "SM count" still
# exercises split-K and multi-program paths.
_INTERPRETER_SMS = 4


def triton_interpreting() -> bool:
    """True when Triton kernels run on CPU tensors through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def traced(t: torch.Tensor) -> bool:
    """Whether a call on ``t`` is being traced (``torch.compile``, ``torch.export``: a fake, functional or other
    subclass tensor, or a dispatch mode) rather than run; traced calls record ops (``wrap_triton``, opaque ops)."""
    return type(t) is not torch.Tensor or bool(torch._C._len_torch_dispatch_stack())


# A row count nothing is known of (an unbacked symbol has no example value): plan for prefill.
_UNKNOWN_M_HINT = 4096


def rows_hint(M: int | torch.SymInt) -> tuple[int, bool]:
    """``(M, False)`` for a concrete row count; ``(example value, True)`` for a symbolic one (a dynamic batch under
    ``torch.export`` or ``torch.compile``). Reading the hint adds no guard: the dispatch decision it feeds must then
    hold for every M (``s8s4_dispatch.choose`` with ``any_m``)."""
    if not isinstance(M, torch.SymInt):
        return M, False
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    if is_concrete_int(M):
        return int(M), False
    hint = M.node.hint
    return (int(hint) if hint is not None else _UNKNOWN_M_HINT), True


# Compute capability per (device index, the function that read it). torch.cuda.get_device_capability reads the
# device's properties on every call (16 us of host time on the H200 machine, as much as a kernel launch); the key
# holds the function too, so a test or an AOT compile that patches it sees its own values.
_CAPABILITIES: dict[tuple, tuple[int, int]] = {}


def capability(device: torch.device) -> tuple[int, int]:
    """Compute capability of a CUDA device (cached); ``(0, 0)`` for any other device (the interpreter's CPU
    tensors)."""
    if device.type != "cuda":
        return (0, 0)
    read = torch.cuda.get_device_capability
    if device.index is None:  # "cuda": the current device, which can change
        return tuple(read(device))
    key = (device.index, read)
    cap = _CAPABILITIES.get(key)
    if cap is None:
        cap = _CAPABILITIES[key] = tuple(read(device))
    return cap


def has_fp8_mma(device: torch.device) -> bool:
    """fp8 (e4m3) tensor-core MMA and hardware e4m3 conversion: sm_89 (Ada) and newer."""
    return capability(device) >= (8, 9)


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (cached); a small fixed count under the interpreter."""
    if device.type != "cuda":
        return _INTERPRETER_SMS
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())


# Letting ptxas pipeline WGMMAs whose A operand is in registers (our decoded weights) has given wrong sums: ptxas
# before 13.3 may move the register writes feeding a WGMMA past the wait for the previous one that still reads them
# (triton-lang/triton#9433, fixed in ptxas 13.3), and with ptxas 13.5 on Triton 3.6 the 8-warp 256x128 TMA tile and a
# 4-warp 256x64 one still returned NaN or 5-34x the rounding bound while other 4-warp tiles were right
# (docs/measurements/h200_run19_weight_only_ptxas.md). So pipelining is allowed only for configs measured right on the
# GPU (their ``wgmma_pipelined`` flag), with the toolchain they were measured on.
# Shared memory one CTA may take on sm_90 (opt-in, per the CUDA programming guide's compute capability table).
SM90_MAX_SHARED_BYTES = 227 * 1024

PIPELINED_WGMMA_PTXAS = (13, 3)  # at least this ptxas
PIPELINED_WGMMA_TRITON = ("3.6",)  # Triton versions the flagged configs were verified with (run 19)


def _sm_arch(device: torch.device) -> int:
    """``10 * major + minor`` of the device, or of ``torch.cuda.get_device_capability()`` off CUDA (what
    ``lowbit_flex.triton_aot`` patches to compile for a chosen arch without a GPU)."""
    major, minor = capability(device) if device.type == "cuda" else torch.cuda.get_device_capability()
    return 10 * major + minor


@functools.cache
def _ptxas_version(arch: int) -> tuple[int, ...]:
    from triton.backends.nvidia.compiler import get_ptxas  # Triton 3.6 - 3.9: the ptxas it runs for this arch

    return tuple(int(p) for p in get_ptxas(arch).version.split(".")[:2])


def _triton_version() -> str:
    import triton

    return triton.__version__


def register_a_wgmma_pipelines(device: torch.device, verified: bool) -> bool:
    """Whether a kernel whose config was measured right with pipelined WGMMAs (``verified``) may let ptxas pipeline
    its WGMMAs with register A operands: always below sm_90 (no WGMMA) and under the interpreter; on sm_90 only for a
    verified config, a ptxas of at least :data:`PIPELINED_WGMMA_PTXAS` (Triton 3.6 bundles 12.8:
    ``TRITON_PTXAS_PATH`` can name a newer one) and a Triton of :data:`PIPELINED_WGMMA_TRITON`. Where it is False,
    the kernels keep their K loop's zero-trip path, on which ptxas serializes the loop's WGMMAs (warning C7515):
    slower, but no WGMMA is in flight when the next step's registers are written."""
    if triton_interpreting():
        return True
    arch = _sm_arch(device)
    if arch < 90:
        return True
    toolchain = _ptxas_version(arch) >= PIPELINED_WGMMA_PTXAS and _triton_version().startswith(PIPELINED_WGMMA_TRITON)
    return verified and toolchain
