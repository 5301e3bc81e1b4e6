"""fp6 / fp4 weight-only GEMM on Hopper with the decoded weight as WGMMA's register operand, in CUDA
(``csrc/float_weight_gemm/``): ``out = x @ (decode(w) * w_scale[:, None]).T + bias`` for ``M >= 16`` rows of x.

TMA brings x's tiles (the 128-byte swizzle WGMMA reads) and the tile layout's words (:mod:`lowbit_flex.quant.fpx_tiles`)
into a pipeline of shared-memory stages; each consumer warpgroup decodes its 64 weight rows straight into the A
registers of ``wgmma m64nBMk16`` (one byte permute per two words joins the layout's planes into WGMMA's fragment
order), so the decoded weight never goes back through shared memory, which is what bounded the Gluon kernel from
M = 256 (docs/measurements/h200_run45_gluon_weight_only.md). ``csrc/float_weight_gemm/float_weight_gemm_sm90.cuh``
says why each piece is there.

Split-K where the output tiles leave SMs idle: each split writes fp32 partials, reduced in split order by
:func:`~lowbit_flex.kernels.common.reduce_split_k` (deterministic).

Not in the dispatch table yet (unmeasured): the weight-only dispatch runs it only when forced
(``backend=Backend.CUDA_GEMM``), eagerly; a traced call raises. Constraints (:func:`gemm_cuda_supports`): sm_90,
fp4 / fp6 codes, ``K % 8 == 0``, 16-byte aligned bases (copied where not).
"""

from __future__ import annotations

import ctypes
import functools

import torch
import triton

from lowbit_flex import cuda_build
from lowbit_flex.kernels.arch import sm_count, traced
from lowbit_flex.kernels.common import reduce_split_k, split_k_blocks
from lowbit_flex.kernels.cutlass_launch import OUT_DTYPE_CODE, aligned16
from lowbit_flex.kernels.float_weight_decode import dec_scale
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
BLOCK_N = 128

_CONFIG_INDEX = {name: i for i, name in enumerate(GEMM_CUDA_CONFIGS)}


def gemm_cuda_supports(M: int, K: int, bits: int) -> bool:
    """Whether the kernel takes the shape (``bits`` 4 or 6); the library's presence and the GPU (sm_90) are the
    dispatch's checks."""
    return bits in (4, 6) and M >= 1 and K >= 8 and K % 8 == 0


@functools.cache
def _launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_float_weight_gemm_sm90
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, format, dtype, x, w, w_scale, bias, out, partials, M, N, K, splits, tiles_per_split, stream)
    fn.argtypes = [i32, i32, i32, ptr, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, i32, i32, ptr]
    fn.restype = ctypes.c_int
    return fn


def library_config_names() -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against GEMM_CUDA_CONFIGS)."""
    from lowbit_flex.kernels.cutlass_launch import library_config_names as names

    return names("lowbit_float_weight_gemm_sm90")


@functools.lru_cache(maxsize=1024)
def gemm_cuda_splits(config: str, M: int, N: int, K: int, sms: int) -> tuple[int, int]:
    """``(splits, 128-code K tiles per split)``: K is split until about one CTA per SM is in flight (a CTA holds
    the SM's shared memory), never into empty splits."""
    tiles = triton.cdiv(K, 128)
    out_tiles = triton.cdiv(N, BLOCK_N) * triton.cdiv(M, GEMM_CUDA_CONFIGS[config])
    return split_k_blocks(tiles, out_tiles, 0, 1, sms)


def float_weight_gemm_cuda(x, w, w_scale, bias, ebits: int, mbits: int, config: str) -> torch.Tensor:
    """``x @ (decode(w) * w_scale[:, None]).T + bias`` for ``x`` fp16 / bf16 ``(M, K)`` with contiguous rows,
    ``w`` int32 tile words of fp6 / fp4 codes ``(N, words)``, ``w_scale`` float32 ``(N,)``, ``bias`` ``(N,)`` in
    x's dtype or None; contiguous, on one sm_90 device, validated by the op and :func:`gemm_cuda_supports` ->
    ``(M, N)`` in x's dtype."""
    if traced(x):
        raise ValueError(
            "backend: the CUDA WGMMA weight GEMM runs eagerly only until the dispatch takes it (no traced op yet)"
        )
    (M, K), N = x.shape, w.shape[0]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    x, w = aligned16(x), aligned16(w)  # (a copy where a view is misaligned; held until the launch is enqueued)
    splits, per_split = gemm_cuda_splits(config, M, N, K, sm_count(x.device))
    part = torch.empty((splits, M, N), dtype=torch.float32, device=x.device) if splits > 1 else None
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream().cuda_stream
        status = _launcher()(
            _CONFIG_INDEX[config], FORMAT_CODE[ebits, mbits], OUT_DTYPE_CODE[x.dtype], x.data_ptr(), w.data_ptr(),
            w_scale.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr(),
            None if part is None else part.data_ptr(), M, N, K, splits, per_split, stream,
        )  # fmt: skip
    if status:
        cuda_build.check_status(status, f"float weight GEMM {config}")
    if part is not None:
        post = dec_scale(ebits) if x.dtype == torch.float16 else 1.0  # bf16 codes are rebiased in the decode
        reduce_split_k(part, out, w_scale, bias, post_scale=post)
    return out
