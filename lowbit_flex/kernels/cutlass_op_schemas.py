"""The schemas of the ops ``csrc/torch_ops/`` registers in C++ (``lowbit`` namespace), in their one home.

:mod:`lowbit_flex.cuda_build` passes them to the C++ TU as ``-D`` strings (so they are in its cache key), and
:mod:`lowbit_flex.ops.cutlass_gemm` defines the same ops in Python from them. Plain strings, no imports: both the
build and the op layer read them without importing each other or Triton.
"""

TORCH_OPS_SCHEMAS = {
    "LOWBIT_S8S4_GEMM_CUTLASS_SCHEMA": (
        "s8s4_gemm_cutlass(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor? bias, ScalarType out_dtype, "
        "str family, str config) -> Tensor"
    ),
    "LOWBIT_S8S8_GROUPWISE_GEMM_CUTLASS_SCHEMA": (
        "s8s8_groupwise_gemm_cutlass(Tensor x, Tensor x_scale, Tensor w, Tensor w_scale, Tensor? bias, "
        "ScalarType out_dtype, str config) -> Tensor"
    ),
}
