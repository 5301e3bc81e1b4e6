// The CUDA library's launchers as torch operators, for processes without lowbit_flex's Python: an AOTInductor package
// of a W4A8 model calls lowbit::s8s4_gemm_cutlass / lowbit::s8s4_group_mult_gemm_cutlass /
// lowbit::s8s8_groupwise_gemm_cutlass / lowbit::w4a8_gemv_cuda (and
// of a weight-only model lowbit::float_weight_gemv_cuda / lowbit::float_weight_gemm_cuda /
// lowbit::fp8_weight_gemm_cutlass) by name through the
// dispatcher, so loading this library (torch.ops.load_library, or dlopen from C++) before the package is all such a
// process needs.
//
// Built by lowbit_flex/cuda_build.py (build_torch_ops) next to liblowbit_flex_cuda.so, which it links: this is the
// one translation unit that includes torch headers, and it includes no CUTLASS, so the kernel TUs stay torch-free.
// The schemas come from the build (-D), from their one home, lowbit_flex/kernels/cutlass_op_schemas.py.
//
// First registrant wins: the Python module and this library each define a schema only where it is absent and
// register their CUDA kernel only where none is, so either may load first (lowbit_flex's own CUDA kernels call the
// same launchers through ctypes; they do the same work).
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <string>

#include "common/status.h"
#include "float_weight_gemm/float_weight_gemm.h"
#include "float_weight_gemv/float_weight_gemv.h"
#include "fp8_weight_gemm/fp8_weight_gemm.h"
#include "s8s4_gemm/s8s4_gemm.h"
#include "s8s8_groupwise/s8s8_groupwise.h"
#include "w4a8_gemv/w4a8_gemv.h"

#if !defined(LOWBIT_S8S4_GEMM_CUTLASS_SCHEMA) || !defined(LOWBIT_S8S4_GROUP_MULT_GEMM_CUTLASS_SCHEMA) || \
    !defined(LOWBIT_S8S8_GROUPWISE_GEMM_CUTLASS_SCHEMA) || \
    !defined(LOWBIT_W4A8_GEMV_CUDA_SCHEMA) || !defined(LOWBIT_FLOAT_WEIGHT_GEMV_CUDA_SCHEMA) ||         \
    !defined(LOWBIT_FLOAT_WEIGHT_GEMM_CUDA_SCHEMA) || !defined(LOWBIT_FP8_WEIGHT_GEMM_CUTLASS_SCHEMA)
#error "build with lowbit_flex.cuda_build (it passes the op schemas)"
#endif

namespace {

using NumConfigsFn = int (*)();
using ConfigNameFn = const char* (*)(int);

// The launcher's index of `config`, or a ValueError listing the names compiled in.
int config_index(const char* what, NumConfigsFn count, ConfigNameFn name, c10::string_view config) {
  std::string names;
  for (int i = 0; i < count(); ++i) {
    if (config == name(i)) return i;
    names += std::string(i ? ", " : "") + name(i);
  }
  TORCH_CHECK_VALUE(false, "config: expected one of ", names, " for ", what, ", got '", std::string(config), "'");
  return -1;
}

void check_status(int status, const char* what) {
  TORCH_CHECK_VALUE(status != lowbit::kInvalidArgument, what, " failed: ", lowbit_status_string(status));
  TORCH_CHECK(status == lowbit::kOk, what, " failed: ", lowbit_status_string(status), " (status ", status, ")");
}

void check_tensor(const char* name, const at::Tensor& t, at::ScalarType dtype, int64_t dim, const at::Device& device) {
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, ": expected dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == dim, name, ": expected ", dim, " dimensions, got shape ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == device, name, ": expected it on ", device, " (x's device), got ", t.device());
}

// Contiguous, with a 16-byte aligned base (the kernels read with 128-bit and TMA accesses).
at::Tensor operand(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 ? c.clone() : c;
}

// The output dtype arrives by name, not as a ScalarType: torch's AOTInductor proxy executor up to 2.11 passed a
// package's dtype argument in the export schema's numbering, unconverted (bfloat16 arrived as QUInt8; see
// lowbit_flex/kernels/cutlass_op_schemas.py).
at::ScalarType out_dtype_from_name(c10::string_view out_dtype) {
  if (out_dtype == "bfloat16") return at::kBFloat16;
  TORCH_CHECK_VALUE(out_dtype == "float16", "out_dtype: expected 'float16' or 'bfloat16', got '",
                    std::string(out_dtype), "'");
  return at::kHalf;
}

int out_dtype_code(at::ScalarType out_dtype) { return out_dtype == at::kHalf ? lowbit::kF16 : lowbit::kBF16; }

// The (x, x_scale, w_scale, bias) checks both ops share (the same as lowbit_flex/ops/cutlass_gemm.py's _check).
void check_common(const at::Tensor& x, const at::Tensor& x_scale, const at::Tensor& w_scale,
                  const std::optional<at::Tensor>& bias, int64_t scale_dim) {
  TORCH_CHECK_VALUE(x.is_cuda(), "x: expected a CUDA tensor, got one on ", x.device());
  check_tensor("x", x, at::kChar, 2, x.device());
  const int64_t M = x.size(0), K = x.size(1);
  TORCH_CHECK_VALUE(K >= 32 && K % 32 == 0 && K <= INT32_MAX,
                    "x: expected K = x.shape[1] a positive multiple of 32, got ", K);
  TORCH_CHECK_VALUE(M <= INT32_MAX, "x: expected at most 2**31 - 1 rows, got ", M);
  check_tensor("x_scale", x_scale, at::kFloat, 1, x.device());
  TORCH_CHECK_VALUE(x_scale.size(0) == M, "x_scale: expected shape (", M, ",), got ", x_scale.sizes());
  check_tensor("w_scale", w_scale, at::kFloat, scale_dim, x.device());
  const int64_t N = w_scale.size(0);
  TORCH_CHECK_VALUE(N >= 8 && N % 8 == 0 && N <= INT32_MAX,
                    "w_scale: expected N = w_scale.shape[0] a positive multiple of 8, got ", N);
  if (bias) {
    check_tensor("bias", *bias, at::kFloat, 1, x.device());
    TORCH_CHECK_VALUE(bias->size(0) == N, "bias: expected shape (", N, ",), got ", bias->sizes());
  }
}

// The current stream of `device` (a CUDA device: this TU has no CUDA torch headers, so it asks the guard impl).
cudaStream_t current_stream(const at::Device& device) {
  return static_cast<cudaStream_t>(c10::impl::getDeviceGuardImpl(device.type())->getStream(device).native_handle());
}

// fn(workspace, workspace_bytes, query, stream) on x's device and its current stream: a first call sizes the
// workspace, the second launches with one of that size from the caching allocator.
template <class Launch>
void launch_with_workspace(const at::Device& device, const char* what, Launch&& fn) {
  c10::DeviceGuard guard(device);  // the launchers size persistent grids for the current device
  const cudaStream_t stream = current_stream(device);
  size_t need = 0;
  check_status(fn(nullptr, 0, &need, stream), what);
  at::Tensor workspace;
  if (need) workspace = at::empty({static_cast<int64_t>(need)}, at::TensorOptions().dtype(at::kByte).device(device));
  check_status(fn(need ? workspace.data_ptr() : nullptr, need, nullptr, stream), what);
}

const float* bias_ptr(const std::optional<at::Tensor>& bias) { return bias ? bias->data_ptr<float>() : nullptr; }

at::Tensor s8s4_gemm_cutlass(const at::Tensor& x, const at::Tensor& x_scale, const at::Tensor& w,
                             const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                             c10::string_view out_dtype_name, c10::string_view family, c10::string_view config) {
  check_common(x, x_scale, w_scale, bias, 1);
  const int64_t M = x.size(0), K = x.size(1), N = w_scale.size(0);
  check_tensor("w", w, at::kChar, 2, x.device());
  TORCH_CHECK_VALUE(w.size(0) == N && w.size(1) == K / 2, "w: expected shape (", N, ", ", K / 2,
                    ") (two int4 per byte), got ", w.sizes());
  const at::ScalarType out_dtype = out_dtype_from_name(out_dtype_name);
  const int dtype = out_dtype_code(out_dtype);
  const bool sm90 = family == "sm90";
  TORCH_CHECK_VALUE(sm90 || family == "sm80", "family: expected 'sm80' or 'sm90', got '", std::string(family), "'");
  const int index =
      sm90 ? config_index("family sm90", lowbit_s8s4_sm90_num_configs, lowbit_s8s4_sm90_config_name, config)
           : config_index("family sm80", lowbit_s8s4_sm80_num_configs, lowbit_s8s4_sm80_config_name, config);
  at::Tensor out = at::empty({M, N}, x.options().dtype(out_dtype));
  if (M == 0) return out;
  const at::Tensor xc = operand(x), xs = x_scale.contiguous(), wc = operand(w), ws = operand(w_scale);
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(operand(*bias)) : std::nullopt;
  auto launcher = sm90 ? lowbit_s8s4_sm90 : lowbit_s8s4_sm80;
  launch_with_workspace(x.device(), sm90 ? "s8s4 CUTLASS sm90" : "s8s4 CUTLASS sm80",
                        [&](void* workspace, size_t bytes, size_t* query, cudaStream_t stream) {
                          return launcher(index, dtype, xc.data_ptr<int8_t>(), xs.data_ptr<float>(), wc.data_ptr(),
                                          ws.data_ptr<float>(), bias_ptr(b), out.data_ptr(), M, N, K, workspace, bytes,
                                          query, stream);
                        });
  return out;
}

// The group multipliers' limits that the Python op checks too (lowbit_flex/kernels/s8s4_cutlass.py,
// group_mult_supported): 16-byte multiplier rows, whole 128-deep K tiles per group, an exact int32 sum.
at::Tensor s8s4_group_mult_gemm_cutlass(const at::Tensor& x, const at::Tensor& x_scale, const at::Tensor& w,
                                        const at::Tensor& w_channel_scale, const at::Tensor& w_group_mult,
                                        const std::optional<at::Tensor>& bias, c10::string_view out_dtype_name,
                                        c10::string_view config) {
  check_common(x, x_scale, w_channel_scale, bias, 1);
  const int64_t M = x.size(0), K = x.size(1), N = w_channel_scale.size(0);
  check_tensor("w", w, at::kChar, 2, x.device());
  TORCH_CHECK_VALUE(w.size(0) == N && w.size(1) == K / 2, "w: expected shape (", N, ", ", K / 2,
                    ") (two int4 per byte), got ", w.sizes());
  check_tensor("w_group_mult", w_group_mult, at::kChar, 2, x.device());
  const int64_t groups = w_group_mult.size(0);
  TORCH_CHECK_VALUE(w_group_mult.size(1) == N && groups >= 1 && K % groups == 0 && (K / groups) % 128 == 0,
                    "w_group_mult: expected (K // group, N) = (K // group, ", N,
                    ") with the group a multiple of 128 dividing K = ", K, ", got ", w_group_mult.sizes());
  TORCH_CHECK_VALUE(N % 16 == 0, "w_channel_scale: expected N a multiple of 16, got ", N);
  TORCH_CHECK_VALUE(K <= (1 << 17) - 128, "x: expected K <= 2**17 - 128 (an exact int32 sum), got ", K);
  const at::ScalarType out_dtype = out_dtype_from_name(out_dtype_name);
  const int dtype = out_dtype_code(out_dtype);
  const int index = config_index("the group-multiplier kernel", lowbit_s8s4_sm90_mult_num_configs,
                                 lowbit_s8s4_sm90_mult_config_name, config);
  at::Tensor out = at::empty({M, N}, x.options().dtype(out_dtype));
  if (M == 0) return out;
  const at::Tensor xc = operand(x), xs = x_scale.contiguous(), wc = operand(w), ws = operand(w_channel_scale);
  const at::Tensor mult = operand(w_group_mult);
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(operand(*bias)) : std::nullopt;
  launch_with_workspace(x.device(), "s8s4 CUTLASS sm90 group multipliers",
                        [&](void* workspace, size_t bytes, size_t* query, cudaStream_t stream) {
                          return lowbit_s8s4_sm90_mult(index, dtype, xc.data_ptr<int8_t>(), xs.data_ptr<float>(),
                                                       wc.data_ptr(), ws.data_ptr<float>(), bias_ptr(b),
                                                       out.data_ptr(), M, N, K, workspace, bytes, query, stream,
                                                       mult.data_ptr<int8_t>(), static_cast<int>(K / groups));
                        });
  return out;
}

at::Tensor s8s8_groupwise_gemm_cutlass(const at::Tensor& x, const at::Tensor& x_scale, const at::Tensor& w,
                                       const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                                       c10::string_view out_dtype_name, c10::string_view config) {
  check_common(x, x_scale, w_scale, bias, 2);
  const int64_t M = x.size(0), K = x.size(1), N = w_scale.size(0), groups = w_scale.size(1);
  check_tensor("w", w, at::kChar, 2, x.device());
  TORCH_CHECK_VALUE(w.size(0) == N && w.size(1) == K, "w: expected shape (", N, ", ", K,
                    ") (int8, one value per byte), got ", w.sizes());
  TORCH_CHECK_VALUE(groups >= 1 && K % groups == 0, "w_scale: expected (N, K // group) with the group dividing K = ", K,
                    ", got ", w_scale.sizes());
  const at::ScalarType out_dtype = out_dtype_from_name(out_dtype_name);
  const int dtype = out_dtype_code(out_dtype);
  const int index = config_index("the group-wise kernel", lowbit_s8s8_groupwise_sm90_num_configs,
                                 lowbit_s8s8_groupwise_sm90_config_name, config);
  at::Tensor out = at::empty({M, N}, x.options().dtype(out_dtype));
  if (M == 0) return out;
  const at::Tensor xc = operand(x), xs = x_scale.contiguous(), wc = operand(w), ws = w_scale.contiguous();
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  launch_with_workspace(x.device(), "s8s8 group-wise CUTLASS",
                        [&](void* workspace, size_t bytes, size_t* query, cudaStream_t stream) {
                          return lowbit_s8s8_groupwise_sm90(index, dtype, xc.data_ptr<int8_t>(), xs.data_ptr<float>(),
                                                            wc.data_ptr<int8_t>(), ws.data_ptr<float>(),
                                                            /*w_channel_scale=*/nullptr, bias_ptr(b), out.data_ptr(), M,
                                                            N, K, K / groups, workspace, bytes, query, stream);
                        });
  return out;
}

// The decode GEMV (csrc/w4a8_gemv): int8 x with x_scale, or a float x the kernel quantizes (x_scale absent). The
// shape limits (M <= 16, K % 128, groups of 128s, the fused x size) are the launcher's problem_ok: a ValueError.
at::Tensor w4a8_gemv_cuda(const at::Tensor& x, const std::optional<at::Tensor>& x_scale, const at::Tensor& w,
                          const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                          c10::string_view out_dtype_name, c10::string_view config) {
  TORCH_CHECK_VALUE(x.is_cuda(), "x: expected a CUDA tensor, got one on ", x.device());
  const at::ScalarType xt = x.scalar_type();
  const int x_code = xt == at::kChar       ? lowbit::w4a8_gemv::kXInt8
                     : xt == at::kHalf     ? lowbit::w4a8_gemv::kXF16
                     : xt == at::kBFloat16 ? lowbit::w4a8_gemv::kXBF16
                     : xt == at::kFloat    ? lowbit::w4a8_gemv::kXF32
                                           : -1;
  TORCH_CHECK_TYPE(x_code >= 0, "x: expected dtype int8, float16, bfloat16 or float32, got ", xt);
  TORCH_CHECK_VALUE(x.dim() == 2, "x: expected 2 dimensions, got shape ", x.sizes());
  const int64_t M = x.size(0), K = x.size(1), N = w_scale.size(0);
  if (xt == at::kChar) {
    TORCH_CHECK_VALUE(x_scale.has_value(), "x_scale: expected float32 (M,) scales for an int8 x, got None");
    check_tensor("x_scale", *x_scale, at::kFloat, 1, x.device());
    TORCH_CHECK_VALUE(x_scale->size(0) == M, "x_scale: expected shape (", M, ",), got ", x_scale->sizes());
  } else {
    TORCH_CHECK_VALUE(!x_scale.has_value(), "x_scale: expected None for a ", xt, " x (quantized in the kernel)");
  }
  TORCH_CHECK_TYPE(w_scale.scalar_type() == at::kFloat, "w_scale: expected dtype float32, got ", w_scale.scalar_type());
  TORCH_CHECK_VALUE(w_scale.dim() == 1 || w_scale.dim() == 2, "w_scale: expected (N,) or (N, K // group), got shape ",
                    w_scale.sizes());
  TORCH_CHECK_VALUE(w_scale.device() == x.device(), "w_scale: expected it on ", x.device(), ", got ", w_scale.device());
  const int64_t groups = w_scale.dim() == 2 ? w_scale.size(1) : 1;
  TORCH_CHECK_VALUE(groups >= 1 && K % groups == 0,
                    "w_scale: expected (N,) or (N, K // group) with the group dividing K = ", K, ", got ",
                    w_scale.sizes());
  check_tensor("w", w, at::kChar, 2, x.device());
  TORCH_CHECK_VALUE(w.size(0) == N && w.size(1) == K / 2, "w: expected shape (", N, ", ", K / 2,
                    ") (two int4 per byte), got ", w.sizes());
  if (bias) {
    check_tensor("bias", *bias, at::kFloat, 1, x.device());
    TORCH_CHECK_VALUE(bias->size(0) == N, "bias: expected shape (", N, ",), got ", bias->sizes());
  }
  const at::ScalarType out_dtype = out_dtype_from_name(out_dtype_name);
  const int index = config_index("the W4A8 GEMV", lowbit_w4a8_gemv_num_configs, lowbit_w4a8_gemv_config_name, config);
  at::Tensor out = at::empty({M, N}, x.options().dtype(out_dtype));
  if (M == 0) return out;
  TORCH_CHECK_VALUE(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "x: shape too large, got ", x.sizes());
  const at::Tensor xc = operand(x), wc = operand(w), ws = w_scale.contiguous();
  const std::optional<at::Tensor> xs = x_scale ? std::optional<at::Tensor>(x_scale->contiguous()) : std::nullopt;
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  c10::DeviceGuard guard(x.device());  // the launcher sizes its persistent grid for the current device
  const cudaStream_t stream = current_stream(x.device());
  check_status(
      lowbit_w4a8_gemv(index, x_code, out_dtype_code(out_dtype), xc.data_ptr(), xs ? xs->data_ptr<float>() : nullptr,
                       wc.data_ptr(), ws.data_ptr<float>(), groups > 1 ? static_cast<int>(K / groups) : 0, bias_ptr(b),
                       out.data_ptr(), static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), stream),
      "w4a8 GEMV");
  return out;
}

// The checks the weight-only kernels share (lowbit_flex/ops/fp8_weight_only_linear.py's and
// fpx_weight_only_linear.py's): x fp16 / bf16 (M, K) on CUDA; w e4m3fn (N, K), or int32 tile words of fp6 / fp4
// codes; w_scale float32 (N,); bias (N,) in x's dtype or none. Returns the lowbit::FpxFormat of (ebits, mbits).
int check_weight_only(const at::Tensor& x, const at::Tensor& w, const at::Tensor& w_scale,
                      const std::optional<at::Tensor>& bias, int64_t ebits, int64_t mbits) {
  TORCH_CHECK_VALUE(x.is_cuda(), "x: expected a CUDA tensor, got one on ", x.device());
  const at::ScalarType xt = x.scalar_type();
  TORCH_CHECK_TYPE(xt == at::kHalf || xt == at::kBFloat16, "x: expected dtype float16 or bfloat16, got ", xt);
  TORCH_CHECK_VALUE(x.dim() == 2, "x: expected 2 dimensions, got shape ", x.sizes());
  const int format = ebits == 4 && mbits == 3   ? lowbit::kE4M3
                     : ebits == 3 && mbits == 2 ? lowbit::kE3M2
                     : ebits == 2 && mbits == 3 ? lowbit::kE2M3
                     : ebits == 2 && mbits == 1 ? lowbit::kE2M1
                                                : -1;
  TORCH_CHECK_VALUE(format >= 0, "ebits, mbits: expected (4, 3), (3, 2), (2, 3) or (2, 1), got (", ebits, ", ", mbits,
                    ")");
  const int64_t K = x.size(1), N = w.size(0);
  if (format == lowbit::kE4M3) {
    check_tensor("w", w, at::kFloat8_e4m3fn, 2, x.device());
    TORCH_CHECK_VALUE(w.size(1) == K, "w: expected shape (", N, ", ", K, ") (the K of x), got ", w.sizes());
  } else {
    check_tensor("w", w, at::kInt, 2, x.device());
    const int64_t words = (K + 127) / 128 * (format == lowbit::kE2M1 ? 16 : 24);
    TORCH_CHECK_VALUE(w.size(1) == words, "w: expected ", words, " int32 words per row (", K,
                      " codes in tiles of 128), got shape ", w.sizes());
  }
  TORCH_CHECK_VALUE(N >= 1 && K >= 1, "w: expected a non-empty weight, got N=", N, ", K=", K);
  check_tensor("w_scale", w_scale, at::kFloat, 1, x.device());
  TORCH_CHECK_VALUE(w_scale.size(0) == N, "w_scale: expected shape (", N, ",), got ", w_scale.sizes());
  if (bias) {
    check_tensor("bias", *bias, xt, 1, x.device());
    TORCH_CHECK_VALUE(bias->size(0) == N, "bias: expected shape (", N, ",), got ", bias->sizes());
  }
  return format;
}

// The weight-only decode GEMV (csrc/float_weight_gemv): fp8 (e4m3fn bytes) or fp6 / fp4 (int32 tile words) weights,
// out in x's dtype. The checks are lowbit_flex/ops/cutlass_gemm.py's _check_float_weight_gemv.
at::Tensor float_weight_gemv_cuda(const at::Tensor& x, const at::Tensor& w, const at::Tensor& w_scale,
                                  const std::optional<at::Tensor>& bias, int64_t ebits, int64_t mbits,
                                  c10::string_view config) {
  namespace fw = lowbit::float_weight_gemv;
  const int format = check_weight_only(x, w, w_scale, bias, ebits, mbits);
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const at::ScalarType xt = x.scalar_type();
  const int k_multiple = format == lowbit::kE4M3 ? 16 : 8;
  TORCH_CHECK_VALUE(M <= fw::kMaxM && K >= 8 && K % k_multiple == 0, "x: the GEMV takes M <= ", fw::kMaxM,
                    " rows and K a multiple of ", k_multiple, "; got M=", M, ", K=", K);
  const int index = config_index("the float weight GEMV", lowbit_float_weight_gemv_num_configs,
                                 lowbit_float_weight_gemv_config_name, config);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0) return out;
  TORCH_CHECK_VALUE(N <= INT32_MAX && K <= INT32_MAX, "x: shape too large, got ", x.sizes());
  const at::Tensor xc = operand(x), wc = operand(w), ws = w_scale.contiguous();
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  c10::DeviceGuard guard(x.device());  // the launcher sizes its persistent grid for the current device
  const cudaStream_t stream = current_stream(x.device());
  check_status(
      lowbit_float_weight_gemv(index, format, xt == at::kHalf ? lowbit::kF16 : lowbit::kBF16, xc.data_ptr(),
                               wc.data_ptr(), ws.data_ptr<float>(), b ? b->data_ptr() : nullptr, out.data_ptr(),
                               static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), stream),
      "float weight GEMV");
  return out;
}

// The weight-only WGMMA GEMM (csrc/float_weight_gemm): e4m3 bytes or fp6 / fp4 tile words, out in x's dtype. The checks
// are lowbit_flex/ops/cutlass_gemm.py's _check_float_weight_gemm.
at::Tensor float_weight_gemm_cuda(const at::Tensor& x, const at::Tensor& w, const at::Tensor& w_scale,
                                  const std::optional<at::Tensor>& bias, int64_t ebits, int64_t mbits,
                                  c10::string_view config) {
  const int format = check_weight_only(x, w, w_scale, bias, ebits, mbits);
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  const at::ScalarType xt = x.scalar_type();
  const int k_multiple = format == lowbit::kE4M3 ? 16 : 8;
  TORCH_CHECK_VALUE(K >= 8 && K % k_multiple == 0, "x: the GEMM takes K a multiple of ", k_multiple,
                    " (at least 8); got K=", K);
  TORCH_CHECK_VALUE(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "x: shape too large, got ", x.sizes());
  const int index = config_index("the float weight GEMM", lowbit_float_weight_gemm_sm90_num_configs,
                                 lowbit_float_weight_gemm_sm90_config_name, config);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0) return out;
  const at::Tensor xc = operand(x), wc = operand(w), ws = w_scale.contiguous();
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  const int dtype = xt == at::kHalf ? lowbit::kF16 : lowbit::kBF16;
  launch_with_workspace(
      x.device(), "float weight GEMM", [&](void* workspace, size_t bytes, size_t* query, cudaStream_t stream) {
        return lowbit_float_weight_gemm_sm90(index, format, dtype, xc.data_ptr(), wc.data_ptr(), ws.data_ptr<float>(),
                                             b ? b->data_ptr() : nullptr, out.data_ptr(), static_cast<int>(M),
                                             static_cast<int>(N), static_cast<int>(K), workspace, bytes, query, stream);
      });
  return out;
}

// The fp8 weight-only prefill GEMM (csrc/fp8_weight_gemm), out in x's dtype. The checks are
// lowbit_flex/ops/cutlass_gemm.py's _check_fp8_weight_gemm.
at::Tensor fp8_weight_gemm_cutlass(const at::Tensor& x, const at::Tensor& w, const at::Tensor& w_scale,
                                   const std::optional<at::Tensor>& bias, c10::string_view config) {
  TORCH_CHECK_VALUE(x.is_cuda(), "x: expected a CUDA tensor, got one on ", x.device());
  const at::ScalarType xt = x.scalar_type();
  TORCH_CHECK_TYPE(xt == at::kHalf || xt == at::kBFloat16, "x: expected dtype float16 or bfloat16, got ", xt);
  TORCH_CHECK_VALUE(x.dim() == 2, "x: expected 2 dimensions, got shape ", x.sizes());
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  check_tensor("w", w, at::kFloat8_e4m3fn, 2, x.device());
  TORCH_CHECK_VALUE(w.size(1) == K, "w: expected shape (", N, ", ", K, ") (the K of x), got ", w.sizes());
  check_tensor("w_scale", w_scale, at::kFloat, 1, x.device());
  TORCH_CHECK_VALUE(w_scale.size(0) == N, "w_scale: expected shape (", N, ",), got ", w_scale.sizes());
  if (bias) {
    check_tensor("bias", *bias, xt, 1, x.device());
    TORCH_CHECK_VALUE(bias->size(0) == N, "bias: expected shape (", N, ",), got ", bias->sizes());
  }
  TORCH_CHECK_VALUE(N >= 8 && N % 8 == 0 && K >= 16 && K % 16 == 0,
                    "w: the GEMM takes N a multiple of 8 and K a multiple of 16; got N=", N, ", K=", K);
  const int index = config_index("the fp8 weight GEMM", lowbit_fp8_weight_gemm_sm90_num_configs,
                                 lowbit_fp8_weight_gemm_sm90_config_name, config);
  at::Tensor out = at::empty({M, N}, x.options());
  if (M == 0) return out;
  TORCH_CHECK_VALUE(M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "x: shape too large, got ", x.sizes());
  const at::Tensor xc = operand(x), wc = operand(w), ws = operand(w_scale);
  const std::optional<at::Tensor> b = bias ? std::optional<at::Tensor>(operand(*bias)) : std::nullopt;
  const int dtype = xt == at::kHalf ? lowbit::kF16 : lowbit::kBF16;
  launch_with_workspace(
      x.device(), "fp8 weight GEMM", [&](void* workspace, size_t bytes, size_t* query, cudaStream_t stream) {
        return lowbit_fp8_weight_gemm_sm90(index, dtype, xc.data_ptr(), wc.data_ptr(), ws.data_ptr<float>(),
                                           b ? b->data_ptr() : nullptr, out.data_ptr(), static_cast<int>(M),
                                           static_cast<int>(N), static_cast<int>(K), workspace, bytes, query, stream);
      });
  return out;
}

// Define `schema` where no one has, and register `kernel` for CUDA where no kernel is.
template <class Fn>
void register_op(torch::Library& defs, torch::Library& cuda, const char* schema, const char* name, Fn kernel) {
  auto op = c10::Dispatcher::singleton().findSchema({std::string("lowbit::") + name, ""});
  if (!op) defs.def(schema, {at::Tag::pt2_compliant_tag});
  op = c10::Dispatcher::singleton().findSchema({std::string("lowbit::") + name, ""});
  if (!op->hasKernelForDispatchKey(c10::DispatchKey::CUDA)) cuda.impl(name, kernel);
}

int register_ops() {
  // Kept for the life of the process: a Library's registrations end with it.
  static torch::Library defs(torch::Library::FRAGMENT, "lowbit", std::nullopt, __FILE__, __LINE__);
  static torch::Library cuda(torch::Library::IMPL, "lowbit", c10::DispatchKey::CUDA, __FILE__, __LINE__);
  register_op(defs, cuda, LOWBIT_S8S4_GEMM_CUTLASS_SCHEMA, "s8s4_gemm_cutlass", TORCH_FN(s8s4_gemm_cutlass));
  register_op(defs, cuda, LOWBIT_S8S4_GROUP_MULT_GEMM_CUTLASS_SCHEMA, "s8s4_group_mult_gemm_cutlass",
              TORCH_FN(s8s4_group_mult_gemm_cutlass));
  register_op(defs, cuda, LOWBIT_S8S8_GROUPWISE_GEMM_CUTLASS_SCHEMA, "s8s8_groupwise_gemm_cutlass",
              TORCH_FN(s8s8_groupwise_gemm_cutlass));
  register_op(defs, cuda, LOWBIT_W4A8_GEMV_CUDA_SCHEMA, "w4a8_gemv_cuda", TORCH_FN(w4a8_gemv_cuda));
  register_op(defs, cuda, LOWBIT_FLOAT_WEIGHT_GEMV_CUDA_SCHEMA, "float_weight_gemv_cuda",
              TORCH_FN(float_weight_gemv_cuda));
  register_op(defs, cuda, LOWBIT_FLOAT_WEIGHT_GEMM_CUDA_SCHEMA, "float_weight_gemm_cuda",
              TORCH_FN(float_weight_gemm_cuda));
  register_op(defs, cuda, LOWBIT_FP8_WEIGHT_GEMM_CUTLASS_SCHEMA, "fp8_weight_gemm_cutlass",
              TORCH_FN(fp8_weight_gemm_cutlass));
  return 0;
}

const int registered = register_ops();

}  // namespace
