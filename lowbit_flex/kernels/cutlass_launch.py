"""The ``ctypes`` protocol every CUTLASS launcher in ``lowbit_flex/csrc/`` shares (``csrc/common/run_gemm.h`` on the
C++ side): 16-byte aligned operands, the output-dtype code, the config names compiled in, and a call that first asks
for the workspace size, then launches with a workspace of that size on the current stream."""

from __future__ import annotations

import ctypes

import torch

from lowbit_flex import cuda_build

OUT_DTYPE_CODE = {torch.float16: 0, torch.bfloat16: 1}  # lowbit::OutDtype (csrc/common/out_dtype.h)


def aligned16(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a copy where its base is not 16-byte aligned: the kernels read and write with 128-bit or TMA
    accesses (a fresh allocation always is aligned)."""
    return t if t.data_ptr() % 16 == 0 else t.clone()


def library_config_names(prefix: str) -> tuple[str, ...]:
    """The config names the loaded library compiled for the launcher ``prefix`` (``<prefix>_num_configs`` and
    ``<prefix>_config_name``), in launcher index order."""
    lib = cuda_build.load()
    count, name = getattr(lib, f"{prefix}_num_configs"), getattr(lib, f"{prefix}_config_name")
    count.restype, name.restype, name.argtypes = ctypes.c_int, ctypes.c_char_p, [ctypes.c_int]
    return tuple(name(i).decode() for i in range(count()))


def launch_with_workspace(fn, args: tuple, device: torch.device, what: str, extra: tuple = ()) -> None:
    """``fn(*args, workspace, workspace_bytes, query, stream, *extra)`` on ``device``'s current stream: a first call
    with a query pointer stores the workspace size and launches nothing; the second launches with a workspace of that
    size (from the caching allocator). A non-zero status raises (``cuda_build.check_status``)."""
    with torch.cuda.device(device):  # launchers size persistent / stream-K grids for the current device
        stream = torch.cuda.current_stream().cuda_stream
        need = ctypes.c_size_t(0)
        cuda_build.check_status(fn(*args, None, 0, ctypes.byref(need), stream, *extra), f"{what} workspace")
        workspace = torch.empty(need.value, dtype=torch.uint8, device=device) if need.value else None
        ws_ptr = None if workspace is None else workspace.data_ptr()
        cuda_build.check_status(fn(*args, ws_ptr, need.value, None, stream, *extra), what)
