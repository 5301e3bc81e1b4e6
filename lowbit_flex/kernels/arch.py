"""Where the kernels run: the Triton interpreter flag and GPU architecture facts, read once per device.

Torch-only (no Triton import), so op files and ``attention/`` may import it at module level without making
``import lowbit_flex`` heavier. Every capability check in the package goes through here: launchers read the
architecture with ``torch.cuda.get_device_capability`` (which ``lowbit_flex.triton_aot`` patches to compile for
sm_80 / sm_90 without a GPU), so nothing here is cached by capability.
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


def capability(device: torch.device) -> tuple[int, int]:
    """Compute capability of a CUDA device; ``(0, 0)`` for any other device (the interpreter's CPU tensors)."""
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else (0, 0)


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


# ptxas before 13.3 may move the register writes that feed a WGMMA's A operand (our decoded weights) past the wait
# guarding the previous WGMMA that reads the same registers: a read-after-write hazard that gives wrong sums
# (triton-lang/triton#9433, fixed in ptxas 13.3). With two warp groups (8 warps) Triton 3.6 also waits for one warp
# group's WGMMAs where both must finish (triton-lang/triton#11056, fixed after 3.6). Measured on the H200 with Triton
# 3.6 (docs/measurements/h200_run19_weight_only_ptxas.md): pipelined, the TMA tiles returned NaN or 3-10x the rounding
# bound with its bundled ptxas 12.8; with ptxas 13.5 the 4-warp tiles were right and the 8-warp 256-row tile was not.
PIPELINED_REGISTER_A_WGMMA_PTXAS = (13, 3)


def _sm_arch(device: torch.device) -> int:
    """``10 * major + minor`` of the device, or of ``torch.cuda.get_device_capability()`` off CUDA (what
    ``lowbit_flex.triton_aot`` patches to compile for a chosen arch without a GPU)."""
    major, minor = capability(device) if device.type == "cuda" else torch.cuda.get_device_capability()
    return 10 * major + minor


@functools.cache
def _ptxas_version(arch: int) -> tuple[int, ...]:
    from triton.backends.nvidia.compiler import get_ptxas  # Triton 3.6 - 3.9: the ptxas it runs for this arch

    return tuple(int(p) for p in get_ptxas(arch).version.split(".")[:2])


def register_a_wgmma_pipelines(device: torch.device, num_warps: int = 4) -> bool:
    """Whether a kernel of ``num_warps`` warps may let ptxas pipeline WGMMAs whose A operand is in registers: True
    below sm_90 (no WGMMA) and under the interpreter; on sm_90 only for one warp group (``num_warps <= 4``) and a
    ptxas of at least :data:`PIPELINED_REGISTER_A_WGMMA_PTXAS` (Triton 3.9's for sm_90 is 13.4; Triton 3.6 bundles
    12.8, and ``TRITON_PTXAS_PATH`` can name a newer one). Where it is False, the kernels keep their K loop's
    zero-trip path, on which ptxas serializes the loop's WGMMAs (warning C7515): slower, but no WGMMA is in flight
    when the next step's registers are written."""
    if triton_interpreting():
        return True
    arch = _sm_arch(device)
    return arch < 90 or (num_warps <= 4 and _ptxas_version(arch) >= PIPELINED_REGISTER_A_WGMMA_PTXAS)
