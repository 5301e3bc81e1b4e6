"""The schemas of the ops ``csrc/torch_ops/`` registers in C++ (``lowbit`` namespace), in their one home.

:mod:`lowbit_flex.cuda_build` passes them to the C++ TU as ``-D`` strings (so they are in its cache key), and
:mod:`lowbit_flex.ops.cutlass_gemm` defines the same ops in Python from them. Plain strings, no imports: both the
build and the op layer read them without importing each other or Triton.

``out_dtype`` is a dtype *name* (``"float16"`` / ``"bfloat16"``), not a ``ScalarType``: an AOTInductor package
stores a dtype argument in the export schema's numbering, and torch's proxy executor up to 2.11 handed that number
to the op as a ``c10::ScalarType`` unconverted (pytorch#169157, fixed by pytorch#173562): bfloat16 arrived as
``QUInt8`` and the package failed on the H200 (torch 2.11, run 22). A string reaches the op intact in every version.
"""

TORCH_OPS_SCHEMAS = {
    "LOWBIT_S8S4_GEMM_CUTLASS_SCHEMA": (
        "s8s4_gemm_cutlass(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor? bias, str out_dtype, "
        "str family, str config) -> Tensor"
    ),
    # The Hopper W4A8 GEMM with int8 group multipliers (K // group, N) applied on the int4 upcast, w_channel_scale (N,).
    "LOWBIT_S8S4_GROUP_MULT_GEMM_CUTLASS_SCHEMA": (
        "s8s4_group_mult_gemm_cutlass(Tensor x, Tensor x_scale, Tensor w, Tensor w_channel_scale, Tensor w_group_mult, "
        "Tensor? bias, str out_dtype, str config) -> Tensor"
    ),
    "LOWBIT_S8S8_GROUPWISE_GEMM_CUTLASS_SCHEMA": (
        "s8s8_groupwise_gemm_cutlass(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor? bias, "
        "str out_dtype, str config) -> Tensor"
    ),
    # x int8 with x_scale, or float with x_scale None (quantized in the kernel); w_scale (N,) or (N, K // group).
    "LOWBIT_W4A8_GEMV_CUDA_SCHEMA": (
        "w4a8_gemv_cuda(Tensor x, Tensor? x_scale, Tensor w, Tensor w_scale, Tensor? bias, str out_dtype, "
        "str config) -> Tensor"
    ),
    # x fp16 / bf16 (M <= 16, K); w float8_e4m3fn (N, K) or int32 fp6 / fp4 tile words; out in x's dtype.
    "LOWBIT_FLOAT_WEIGHT_GEMV_CUDA_SCHEMA": (
        "float_weight_gemv_cuda(Tensor x, Tensor w, Tensor w_scale, Tensor? bias, int ebits, int mbits, "
        "str config) -> Tensor"
    ),
    # x fp16 / bf16 (M, K); w float8_e4m3fn (N, K) or int32 fp6 / fp4 tile words; out in x's dtype.
    "LOWBIT_FLOAT_WEIGHT_GEMM_CUDA_SCHEMA": (
        "float_weight_gemm_cuda(Tensor x, Tensor w, Tensor w_scale, Tensor? bias, int ebits, int mbits, "
        "str config) -> Tensor"
    ),
    # x fp16 / bf16 (M, K); w float8_e4m3fn (N, K); w_scale float32 (N,); bias (N,) in x's dtype; out in x's dtype.
    "LOWBIT_FP8_WEIGHT_GEMM_CUTLASS_SCHEMA": (
        "fp8_weight_gemm_cutlass(Tensor x, Tensor w, Tensor w_scale, Tensor? bias, str config) -> Tensor"
    ),
}
