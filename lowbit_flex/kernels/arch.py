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
