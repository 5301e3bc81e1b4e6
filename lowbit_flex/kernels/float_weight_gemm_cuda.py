"""fp8 / fp6 / fp4 weight-only GEMM on Hopper with the decoded weight as WGMMA's register operand, in CUDA
(``csrc/float_weight_gemm/``): ``out = x @ (decode(w) * w_scale[:, None]).T + bias`` for any M (its row tiles
are 16 to 256 rows of x: built for M >= 16).

TMA brings x's tiles (the 128-byte swizzle WGMMA reads) and the weight's (the tile layout's words of
:mod:`lowbit_flex.quant.fpx_tiles`, or e4m3 rows) into a pipeline of shared-memory stages; each consumer warpgroup
decodes its 64 weight rows straight into the A registers of ``wgmma m64nBMk16`` (fp4 / fp6: one byte permute per
two words joins the layout's planes into WGMMA's fragment order; fp8: one per two bytes picks the lane's pair), so
the decoded weight never goes back through shared memory, which is what bounded the Gluon kernel from M = 256
(docs/measurements/h200_run45_gluon_weight_only.md). ``csrc/float_weight_gemm/float_weight_gemm_sm90.cuh``
says why each piece is there.

Split-K where the output tiles leave SMs idle (the launcher plans it: about one CTA per SM). Up to 8 splits of a
tile run as one thread-block cluster and add their fp32 sums through distributed shared memory, where every tile's
cluster fits the GPU at once (no workspace, no second kernel); otherwise each split writes fp32 partials into the
launcher's workspace and the library's reduce kernel adds them, launched as the GEMM's programmatic dependent so
its launch overlaps the GEMM (``LOWBIT_FLEX_REDUCE_PDL=0``: after it, the A/B switch). Both add in split order
(deterministic, the same bits).

Called through ``ctypes`` in eager mode; traced calls record the ``lowbit::float_weight_gemm_cuda`` op
(``lowbit_flex/ops/cutlass_gemm.py``), which AOTInductor packages can call. The weight-only dispatch table takes it
where H200 run 51 and H100 runs 54 and 64 measured it fastest (``float_weight_dispatch.DISPATCH_TABLE``: fp4 / fp6
from M = 1-9 by layer size, every format at M = 17-64, fp4 / fp6 prefill to M = 4096, fp8 at M = 193-256 with few
output tiles); ``backend=Backend.CUDA_GEMM`` forces it. Constraints
(:func:`gemm_cuda_supports`): sm_90, ``K % 8 == 0`` (fp8: ``K % 16 == 0``), 16-byte aligned bases (copied where
not).
"""

from __future__ import annotations

import ctypes
import functools

import torch

from lowbit_flex import cuda_build
from lowbit_flex.kernels.arch import traced
from lowbit_flex.kernels.cutlass_launch import OUT_DTYPE_CODE, aligned16, launch_with_workspace
from lowbit_flex.kernels.float_weight_gemv_cuda import FORMAT_CODE

# Mirrors LOWBIT_FLOAT_WEIGHT_GEMM_CONFIGS in csrc/float_weight_gemm/float_weight_gemm.h (position = the launcher's
# config index): the (M, N) tile, M being x rows (the WGMMA's N side), N the 128 weight rows of two warpgroups.
GEMM_CUDA_CONFIGS: dict[str, int] = {
    "wgmma_16x128": 16,
    "wgmma_32x128": 32,
    "wgmma_64x128": 64,
    "wgmma_128x128": 128,
    "wgmma_256x128": 256,
}
_CONFIG_INDEX = {name: i for i, name in enumerate(GEMM_CUDA_CONFIGS)}


def gemm_cuda_supports(M: int, K: int, bits: int) -> bool:
    """Whether the kernel takes the shape (``bits`` 8, 6 or 4: TMA rows of 16-byte multiples, x's and fp8 w's); the
    library's presence and the GPU (sm_90) are the dispatch's checks."""
    return bits in (4, 6, 8) and M >= 1 and K >= 8 and K % (16 if bits == 8 else 8) == 0


@functools.cache
def _launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_float_weight_gemm_sm90
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, format, dtype, x, w, w_scale, bias, out, M, N, K, workspace, workspace_bytes, query, stream)
    fn.argtypes = [i32, i32, i32, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, ptr, ctypes.c_size_t, ptr, ptr]
    fn.restype = ctypes.c_int
    return fn


def library_config_names() -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against GEMM_CUDA_CONFIGS)."""
    from lowbit_flex.kernels.cutlass_launch import library_config_names as names

    return names("lowbit_float_weight_gemm_sm90")


def float_weight_gemm_cuda(x, w, w_scale, bias, ebits: int, mbits: int, config: str) -> torch.Tensor:
    """``x @ (decode(w) * w_scale[:, None]).T + bias`` for ``x`` fp16 / bf16 ``(M, K)`` with contiguous rows,
    ``w`` float8_e4m3fn ``(N, K)`` or int32 tile words of fp6 / fp4 codes, ``w_scale`` float32 ``(N,)``, ``bias``
    ``(N,)`` in x's dtype or None; contiguous, on one sm_90 device, validated by the op and
    :func:`gemm_cuda_supports` -> ``(M, N)`` in x's dtype. Traced calls record ``lowbit::float_weight_gemm_cuda``."""
    if traced(x):  # the op, which AOTInductor packages call by name (lowbit_flex/ops/cutlass_gemm.py)
        return torch.ops.lowbit.float_weight_gemm_cuda(x, w, w_scale, bias, ebits, mbits, config)
    return launch_gemm_cuda(x, w, w_scale, bias, ebits, mbits, config)


def bound_gemm_cuda(x, w, ebits: int, mbits: int, config: str):
    """The launcher bound to this shape, format, dtype and config, with its split-K workspace size asked once:
    ``launch(x, w, w_scale, bias, out)`` on tensors with the metadata of ``x`` and ``w`` (16-byte aligned,
    contiguous: the eager caller's cache key keeps them so), on the current stream of x's device. None where ``x`` or
    ``w`` is misaligned (:func:`launch_gemm_cuda` copies)."""
    if x.data_ptr() % 16 or w.data_ptr() % 16:
        return None
    (M, K), N = x.shape, w.shape[0]
    fn, device = _launcher(), x.device
    fixed = (_CONFIG_INDEX[config], FORMAT_CODE[ebits, mbits], OUT_DTYPE_CODE[x.dtype])
    what = f"float weight GEMM {config}"
    need = ctypes.c_size_t(0)
    with torch.cuda.device(device):  # the split plan is for this device's SMs
        # a query reads no tensor: x's pointer stands in for w_scale and out, which the launcher only checks non-null
        status = fn(*fixed, x.data_ptr(), w.data_ptr(), x.data_ptr(), None, x.data_ptr(), M, N, K, None, 0,
                    ctypes.byref(need), None)  # fmt: skip
    if status:
        cuda_build.check_status(status, f"{what} workspace")
    need = need.value
    get_stream = torch._C._cuda_getCurrentRawStream

    def launch(x, w, w_scale, bias, out) -> None:
        ws = torch.empty(need, dtype=torch.uint8, device=device) if need else None
        status = fn(*fixed, x.data_ptr(), w.data_ptr(), w_scale.data_ptr(), None if bias is None else bias.data_ptr(),
                    out.data_ptr(), M, N, K, None if ws is None else ws.data_ptr(), need, None,
                    get_stream(device.index))  # fmt: skip
        if status:
            cuda_build.check_status(status, what)

    return launch


def launch_gemm_cuda(x, w, w_scale, bias, ebits: int, mbits: int, config: str) -> torch.Tensor:
    """The ``ctypes`` launch on validated, contiguous CUDA tensors (a workspace query, then the launch)."""
    (M, K), N = x.shape, w.shape[0]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    x, w = aligned16(x), aligned16(w)  # (a copy where a view is misaligned; held until the launch is enqueued)
    args = (_CONFIG_INDEX[config], FORMAT_CODE[ebits, mbits], OUT_DTYPE_CODE[x.dtype], x.data_ptr(), w.data_ptr(),
            w_scale.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr(), M, N, K)  # fmt: skip
    launch_with_workspace(_launcher(), args, x.device, f"float weight GEMM {config}")
    return out
