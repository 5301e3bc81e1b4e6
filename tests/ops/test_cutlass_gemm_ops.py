"""The CUDA-library ops (``lowbit::s8s4_gemm_cutlass``, ``lowbit::s8s4_group_mult_gemm_cutlass``,
``lowbit::s8s8_groupwise_gemm_cutlass``, the decode GEMVs
``lowbit::w4a8_gemv_cuda`` and ``lowbit::float_weight_gemv_cuda``, the weight-only GEMMs
``lowbit::float_weight_gemm_cuda`` (fp6 / fp4) and ``lowbit::fp8_weight_gemm_cutlass``) and their C++ registration.

``test_opcheck_all.py`` runs opcheck on both (CPU reference; CUDA through ``ctypes``). Here:

* bad input gets the same error from the CPU kernel and the fake;
* the registration order (CPU, no GPU needed): the C++ library, built against a stub of the CUDA library, defines
  the schemas and registers CUDA kernels when it loads first; loaded after ``import lowbit_flex`` it defines and
  registers nothing; ``import lowbit_flex`` after it adds the fake and the CPU reference without a second schema;
* on a GPU, the real C++ library in a process that never imports lowbit_flex gives bit for bit what the ``ctypes``
  path gives (the same launcher and config), and rejects a bad config with a ``ValueError``.
"""

import subprocess
import sys
import textwrap

import pytest
import torch

import lowbit_flex  # noqa: F401
from lowbit_flex import cuda_build
from lowbit_flex.kernels.cutlass_op_schemas import TORCH_OPS_SCHEMAS
from lowbit_flex.ops.cutlass_gemm import CPP_OPS
from lowbit_flex.quant import pack_int4


def _args(device="cpu", N=16, K=64, M=3, packed=True, groups=None):
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8, device=device)
    w = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    w = (pack_int4(w) if packed else w).to(device)
    ws = torch.rand(N, groups, device=device) if groups else torch.rand(N, device=device)
    return x, torch.rand(M, device=device), w, ws, torch.rand(N, device=device)


BAD_S8S4 = [
    (lambda a: (*a, "bfloat16", "sm90", "nope"), ValueError, "config"),
    (lambda a: (*a, "bfloat16", "sm70", "16x128x128_ws"), ValueError, "family"),
    (lambda a: (*a, "float32", "sm90", "16x128x128_ws"), ValueError, "out_dtype"),
    (lambda a: (a[0].float(), *a[1:], "bfloat16", "sm90", "16x128x128_ws"), TypeError, "x"),
    (lambda a: (a[0], a[1][:2], *a[2:], "bfloat16", "sm90", "16x128x128_ws"), ValueError, "x_scale"),
    (lambda a: (*a[:2], a[2][:, :8], *a[3:], "bfloat16", "sm90", "16x128x128_ws"), ValueError, "w"),
    (lambda a: (*a[:4], a[4][:3], "bfloat16", "sm90", "16x128x128_ws"), ValueError, "bias"),
    (lambda a: (a[0][:, :48], *a[1:], "bfloat16", "sm90", "16x128x128_ws"), ValueError, "x"),
]


@pytest.mark.parametrize("make, error, name", BAD_S8S4)
def test_s8s4_bad_input_same_error_eager_and_fake(make, error, name):
    args = make(_args())
    with pytest.raises(error, match=f"^{name}:"):
        torch.ops.lowbit.s8s4_gemm_cutlass(*args)
    meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
    with pytest.raises(error, match=f"^{name}:"):
        torch.ops.lowbit.s8s4_gemm_cutlass(*meta)


def _mult_args(M=3, K=256, N=16, groups=2):
    x, xs, w, channel, b = _args(N=N, K=K, M=M)
    return x, xs, w, channel, torch.randint(0, 17, (groups, N), dtype=torch.int8), b


_MULT_CFG = "128x128x128_coop_mult"
BAD_MULT = [
    (lambda: (*_mult_args(), "bfloat16", "nope"), ValueError, "config"),
    (lambda: (*_mult_args(), "bfloat16", "16x128x128_ws"), ValueError, "config"),  # a per-channel config
    (lambda: (*_mult_args(), "float32", _MULT_CFG), ValueError, "out_dtype"),
    (lambda: (*_mult_args(groups=4), "bfloat16", _MULT_CFG), ValueError, "w_group_mult"),  # groups of 64
    (lambda: (*_mult_args(groups=3), "bfloat16", _MULT_CFG), ValueError, "w_group_mult"),  # 256 % 3
    (lambda: (*_mult_args()[:4], torch.ones(2, 8, dtype=torch.int8), _mult_args()[5], "bfloat16", _MULT_CFG),
     ValueError, "w_group_mult"),  # (groups, N) with the wrong N
    (lambda: (*_mult_args()[:4], torch.ones(2, 16), _mult_args()[5], "bfloat16", _MULT_CFG), TypeError,
     "w_group_mult"),
    (lambda: (*_mult_args(N=24), "bfloat16", _MULT_CFG), ValueError, "w_channel_scale"),  # N % 16
    (lambda: (*_mult_args()[:2], _mult_args()[2][:, :64], *_mult_args()[3:], "bfloat16", _MULT_CFG), ValueError,
     "w"),
    (lambda: (*_mult_args()[:5], torch.rand(3), "bfloat16", _MULT_CFG), ValueError, "bias"),
]  # fmt: skip


@pytest.mark.parametrize("make, error, name", BAD_MULT)
def test_group_mult_bad_input_same_error_eager_and_fake(make, error, name):
    _same_error_eager_and_fake(torch.ops.lowbit.s8s4_group_mult_gemm_cutlass, make(), error, name)


def test_group_mult_reference_is_the_op_on_the_product_scales():
    """The CPU kernel is the W4A8 reference on the group scales channel * multiplier (exact in float64)."""
    x, xs, w, _, mult, b = _mult_args(M=5, K=512, N=32, groups=2)
    channel = torch.ldexp(1 + torch.randint(0, 2**10, (32,)) / 2**10, torch.randint(-6, 3, (32,)))  # 11 bits
    got = torch.ops.lowbit.s8s4_group_mult_gemm_cutlass(x, xs, w, channel, mult, b, "float16", _MULT_CFG)
    ws = (channel.double()[:, None] * mult.t().double()).float().contiguous()  # exact: 11-bit channel times 5-bit int
    assert got.dtype == torch.float16 and torch.equal(got, torch.ops.lowbit.s8s4_linear(x, xs, w, ws, b, torch.float16))


def _gemv_args(M=3, K=256, N=16, groups=None, float_x=False):
    x = torch.randn(M, K, dtype=torch.bfloat16) if float_x else torch.randint(-128, 128, (M, K), dtype=torch.int8)
    w = pack_int4(torch.randint(-8, 8, (N, K), dtype=torch.int8))
    ws = torch.rand(N, groups) if groups else torch.rand(N)
    return x, None if float_x else torch.rand(M), w, ws, torch.rand(N)


BAD_GEMV = [
    (lambda: (*_gemv_args(), "bfloat16", "nope"), ValueError, "config"),
    (lambda: (*_gemv_args(), "float32", "mma_n1k8_pf0"), ValueError, "out_dtype"),
    (lambda: (*_gemv_args(M=17), "bfloat16", "mma_n1k8_pf0"), ValueError, "x"),  # M > 16
    (lambda: (*_gemv_args(K=192), "bfloat16", "mma_n1k8_pf0"), ValueError, "x"),  # K % 128
    (lambda: (*_gemv_args(K=256, groups=4), "bfloat16", "mma_n1k8_pf0"), ValueError, "x"),  # groups of 64
    (lambda: (*_gemv_args(float_x=True, M=9), "bfloat16", "mma_n1k8_pf0"), ValueError, "x"),  # fused: M <= 8
    (lambda: (_gemv_args()[0], None, *_gemv_args()[2:], "bfloat16", "mma_n1k8_pf0"), ValueError, "x_scale"),
    (lambda: (_gemv_args()[0].short(), *_gemv_args()[1:], "bfloat16", "mma_n1k8_pf0"), TypeError, "x"),
    (
        lambda: (*_gemv_args()[:2], _gemv_args()[2][:, :64], *_gemv_args()[3:], "bfloat16", "mma_n1k8_pf0"),
        ValueError,
        "w",
    ),
    (lambda: (*_gemv_args()[:4], torch.rand(3), "bfloat16", "mma_n1k8_pf0"), ValueError, "bias"),
]


def _same_error_eager_and_fake(op, args, error, name):
    with pytest.raises(error, match=f"^{name}:"):
        op(*args)
    meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args)
    with pytest.raises(error, match=f"^{name}:"):
        op(*meta)


@pytest.mark.parametrize("make, error, name", BAD_GEMV)
def test_w4a8_gemv_bad_input_same_error_eager_and_fake(make, error, name):
    _same_error_eager_and_fake(torch.ops.lowbit.w4a8_gemv_cuda, make(), error, name)


def _float_gemv_args(M=3, K=256, N=16, bits=8):
    from lowbit_flex.quant import pack_fpx_tiles

    x = torch.randn(M, K, dtype=torch.bfloat16)
    if bits == 8:
        w = (torch.randn(N, K) * 8).to(torch.float8_e4m3fn)
    else:
        w = pack_fpx_tiles(torch.randint(0, 2**bits, (N, K), dtype=torch.uint8), bits)
    return x, w, torch.rand(N) + 0.5, torch.randn(N, dtype=torch.bfloat16)


BAD_FLOAT_GEMV = [
    (lambda: (*_float_gemv_args(), 4, 3, "nope"), ValueError, "config"),
    (lambda: (*_float_gemv_args(), 5, 3, "cp_n2k4"), ValueError, "ebits, mbits"),
    (lambda: (*_float_gemv_args(M=17), 4, 3, "cp_n2k4"), ValueError, "x"),  # M > 16
    (lambda: (*_float_gemv_args(K=136), 4, 3, "cp_n2k4"), ValueError, "x"),  # fp8: K % 16
    (lambda: (*_float_gemv_args(K=132, bits=4), 2, 1, "cp_n2k4"), ValueError, "x"),  # K % 8
    (lambda: (_float_gemv_args()[0].float(), *_float_gemv_args()[1:], 4, 3, "cp_n2k4"), TypeError, "x"),
    (lambda: (_float_gemv_args()[0][None], *_float_gemv_args()[1:], 4, 3, "cp_n2k4"), ValueError, "x"),  # 3-d
    (lambda: (*_float_gemv_args(bits=4), 3, 2, "cp_n2k4"), ValueError, "w"),  # fp4 words for an fp6 format
    (lambda: (*_float_gemv_args(bits=6), 4, 3, "cp_n2k4"), TypeError, "w"),  # int32 words for fp8
    (lambda: (*_float_gemv_args()[:2], torch.rand(3), None, 4, 3, "cp_n2k4"), ValueError, "w_scale"),
    (lambda: (*_float_gemv_args()[:3], torch.rand(16), 4, 3, "cp_n2k4"), TypeError, "bias"),  # float32 bias
    (lambda: (*_float_gemv_args()[:3], torch.rand(3).bfloat16(), 4, 3, "cp_n2k4"), ValueError, "bias"),
]


@pytest.mark.parametrize("make, error, name", BAD_FLOAT_GEMV)
def test_float_weight_gemv_bad_input_same_error_eager_and_fake(make, error, name):
    _same_error_eager_and_fake(torch.ops.lowbit.float_weight_gemv_cuda, make(), error, name)


BAD_FP8_GEMM = [
    (lambda: (*_float_gemv_args(), "nope"), ValueError, "config"),
    (lambda: (*_float_gemv_args(K=136), "64x128x64_coop_sk"), ValueError, "w"),  # K % 16
    (lambda: (*_float_gemv_args(N=20), "64x128x64_coop_sk"), ValueError, "w"),  # N % 8
    (lambda: (*_float_gemv_args(bits=4), "64x128x64_coop_sk"), TypeError, "w"),  # fp4 words
    (lambda: (_float_gemv_args()[0].float(), *_float_gemv_args()[1:], "64x128x64_coop_sk"), TypeError, "x"),
    (lambda: (_float_gemv_args()[0][None], *_float_gemv_args()[1:], "64x128x64_coop_sk"), ValueError, "x"),
    (lambda: (*_float_gemv_args()[:2], torch.rand(3), None, "64x128x64_coop_sk"), ValueError, "w_scale"),
    (lambda: (*_float_gemv_args()[:3], torch.rand(16), "64x128x64_coop_sk"), TypeError, "bias"),  # float32 bias
]


@pytest.mark.parametrize("make, error, name", BAD_FP8_GEMM)
def test_fp8_weight_gemm_bad_input_same_error_eager_and_fake(make, error, name):
    _same_error_eager_and_fake(torch.ops.lowbit.fp8_weight_gemm_cutlass, make(), error, name)


BAD_FLOAT_GEMM = [
    (lambda: (*_float_gemv_args(bits=4), 2, 1, "nope"), ValueError, "config"),
    (lambda: (*_float_gemv_args(bits=4), 5, 3, "wgmma_64x128"), ValueError, "ebits, mbits"),
    (lambda: (*_float_gemv_args(K=132, bits=4), 2, 1, "wgmma_64x128"), ValueError, "x"),  # K % 8
    (lambda: (*_float_gemv_args(K=136), 4, 3, "wgmma_64x128"), ValueError, "x"),  # fp8: K % 16
    (lambda: (*_float_gemv_args(bits=6), 4, 3, "wgmma_64x128"), TypeError, "w"),  # int32 words for fp8
    (lambda: (_float_gemv_args()[0].float(), *_float_gemv_args(bits=6)[1:], 3, 2, "wgmma_64x128"), TypeError, "x"),
    (lambda: (_float_gemv_args()[0][None], *_float_gemv_args(bits=6)[1:], 3, 2, "wgmma_64x128"), ValueError, "x"),
    (lambda: (*_float_gemv_args(bits=4), 3, 2, "wgmma_64x128"), ValueError, "w"),  # fp4 words for an fp6 format
    (lambda: (*_float_gemv_args(bits=4)[:2], torch.rand(3), None, 2, 1, "wgmma_64x128"), ValueError, "w_scale"),
    (lambda: (*_float_gemv_args(bits=4)[:3], torch.rand(16), 2, 1, "wgmma_64x128"), TypeError, "bias"),  # float32
]


@pytest.mark.parametrize("make, error, name", BAD_FLOAT_GEMM)
def test_float_weight_gemm_bad_input_same_error_eager_and_fake(make, error, name):
    _same_error_eager_and_fake(torch.ops.lowbit.float_weight_gemm_cuda, make(), error, name)


def test_fp8_weight_gemm_reference_is_the_weight_only_op():
    x, w, s, b = _float_gemv_args(M=70, K=208, N=24)
    got = torch.ops.lowbit.fp8_weight_gemm_cutlass(x, w, s, b, "128x128x64_coop_sk")
    want = (x.double() @ w.double().T * s.double() + b.double()).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


@pytest.mark.parametrize("op, config, M", [("float_weight_gemv_cuda", "cp_n1k4", 5),
                                           ("float_weight_gemm_cuda", "wgmma_128x128", 70)])  # fmt: skip
@pytest.mark.parametrize("bits, ebits, mbits", [(8, 4, 3), (6, 3, 2), (6, 2, 3), (4, 2, 1)])
def test_float_weight_kernels_reference_is_the_weight_only_ops(op, config, M, bits, ebits, mbits):
    # The CPU kernel is the weight-only op's exact reference (float64, one rounding): checked here against a float64
    # product of independently decoded codes.
    from lowbit_flex.quant import E2M1_FN, E2M3_FN, E3M2_FN, from_fpx_bits, unpack_fpx_tiles

    x, w, s, b = _float_gemv_args(M=M, K=200 if bits != 8 else 208, N=24, bits=bits)
    got = getattr(torch.ops.lowbit, op)(x, w, s, b, ebits, mbits, config)
    if bits == 8:
        w64 = w.double()
    else:
        fmt = {(3, 2): E3M2_FN, (2, 3): E2M3_FN, (2, 1): E2M1_FN}[ebits, mbits]
        w64 = from_fpx_bits(unpack_fpx_tiles(w, bits, x.shape[1]), fmt, torch.float64)
    want = (x.double() @ w64.T * s.double() + b.double()).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def test_w4a8_gemv_reference_quantizes_a_float_x_as_the_quantizer_does():
    x, _, w, ws, b = _gemv_args(M=2, K=384, groups=3, float_x=True)
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(x)
    got = torch.ops.lowbit.w4a8_gemv_cuda(x, None, w, ws, b, "float16", "mma_n1k8_pf0")
    ref = torch.ops.lowbit.w4a8_gemv_cuda(xq, xs.view(2), w, ws, b, "float16", "mma_n1k8_pf0")
    assert got.dtype == torch.float16 and torch.equal(got, ref)


def test_schemas_take_no_scalar_type():
    """A dtype travels by name: torch's AOTInductor proxy executor up to 2.11 hands a package's ``ScalarType``
    argument to the op in the export schema's numbering (bfloat16 arrives as QUInt8; H200, torch 2.11)."""
    for schema in TORCH_OPS_SCHEMAS.values():
        # the weight-only kernels have no dtype argument: their output is in x's dtype
        in_x_dtype = any(op in schema for op in ("float_weight_gemv", "float_weight_gemm", "fp8_weight_gemm"))
        assert "ScalarType" not in schema and ("str out_dtype" in schema or in_x_dtype), schema
    with pytest.raises(RuntimeError, match="Expected a value of type 'str' for argument 'out_dtype'"):
        torch.ops.lowbit.s8s4_gemm_cutlass(*_args(), torch.bfloat16, "sm90", "16x128x128_ws")


def test_s8s8_groupwise_rejects_a_group_its_config_does_not_take():
    x, xs, w, ws, b = _args(K=256, packed=False, groups=4)  # group 64
    with pytest.raises(ValueError, match="^w_scale: config 128x128x128_g128 takes groups"):
        torch.ops.lowbit.s8s8_groupwise_gemm_cutlass(x, xs, w, ws, b, "bfloat16", "128x128x128_g128")
    out = torch.ops.lowbit.s8s8_groupwise_gemm_cutlass(x, xs, w, ws, b, "bfloat16", "128x128x128_g64")
    assert out.shape == (3, 16) and out.dtype == torch.bfloat16


# Stub exports of liblowbit_flex_cuda.so: enough to link and load the registration library on a machine without a
# GPU (never called here).
_STUB = """
const char* lowbit_status_string(int s) { return "stub"; }
#define FAMILY(F) int lowbit_##F(void) { return 1; } int lowbit_##F##_num_configs(void) { return 0; } \\
  const char* lowbit_##F##_config_name(int i) { return 0; }
FAMILY(s8s4_sm80) FAMILY(s8s4_sm90) FAMILY(s8s4_sm90_mult) FAMILY(s8s8_groupwise_sm90) FAMILY(w4a8_gemv)
FAMILY(float_weight_gemv) FAMILY(fp8_weight_gemm_sm90) FAMILY(float_weight_gemm_sm90)
"""

_PROBE = """
import sys, torch
first, lib = sys.argv[1], sys.argv[2]
if first == "python":
    import lowbit_flex
torch.ops.load_library(lib)
if first == "cpp":
    import lowbit_flex
for name in {ops!r}:
    dump = torch._C._dispatch_dump(name)
    where = {{line.split(":")[0]: line.split("registered at ")[1] for line in dump.splitlines()
             if "registered at" in line}}
    print(name, "cpp" if "cutlass_ops.cpp" in where["debug"] else "python",
          "cpp" if "cutlass_ops.cpp" in where["CUDA"] else "python", "CPU" in where, "Meta" in where)
"""


@pytest.mark.slow
def test_registration_order_either_way(tmp_path, monkeypatch):
    """~20 s: compiles the registration TU (torch headers) against the stub library."""
    stub = tmp_path / cuda_build.LIB_NAME
    (tmp_path / "stub.c").write_text(_STUB)
    subprocess.run(["gcc", "-shared", "-fPIC", str(tmp_path / "stub.c"), "-o", str(stub)], check=True)
    monkeypatch.setattr(cuda_build, "build", lambda arch, verbose=True: stub)
    lib = cuda_build.build_torch_ops("sm_90a", verbose=False)
    probe = tmp_path / "probe.py"
    probe.write_text(textwrap.dedent(_PROBE.format(ops=CPP_OPS)))
    for first, owner in (("cpp", "cpp"), ("python", "python")):
        proc = subprocess.run([sys.executable, str(probe), first, str(lib)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-4000:]
        lines = proc.stdout.split("\n")[:-1]
        # who defined the schema, whose CUDA kernel; the CPU reference and the fake are Python's either way
        assert lines == [f"{name} {owner} {owner} True True" for name in CPP_OPS], (first, proc.stdout)


_GPU_CHILD = """
import sys, torch
torch.ops.load_library(sys.argv[1])
args = torch.load(sys.argv[2])
outs = [getattr(torch.ops.lowbit, name)(*a) for name, a in args]
try:
    torch.ops.lowbit.s8s4_gemm_cutlass(*args[0][1][:-1], "nope")
    bad = "no error"
except ValueError as e:
    bad = str(e)
try:
    torch.ops.lowbit.s8s4_gemm_cutlass(*args[0][1][:5], "float32", *args[0][1][6:])
    bad_dtype = "no error"
except ValueError as e:
    bad_dtype = str(e)
assert "lowbit_flex" not in sys.modules
torch.save({"outs": outs, "bad": bad, "bad_dtype": bad_dtype}, sys.argv[3])
"""


@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0), reason="needs an sm_90 GPU"
)
def test_cpp_library_without_lowbit_flex_equals_the_ctypes_path(tmp_path):
    from lowbit_flex.ops.cutlass_gemm import torch_ops_library

    torch.manual_seed(0)
    calls = []
    for M, N, K in ((1, 256, 128), (70, 512, 256), (300, 136, 4096)):
        for family, config in (("sm90", "128x128x128_coop"), ("sm90", "16x128x128_ws"), ("sm80", "32x128x128_s4")):
            x, xs, w, ws, b = _args("cuda", N, K, M)
            calls.append(("s8s4_gemm_cutlass", (x, xs, w, ws, b, "bfloat16", family, config)))
        x, xs, w, ws, b = _args("cuda", N, K, M, packed=False, groups=K // 128)
        calls.append(("s8s8_groupwise_gemm_cutlass", (x, xs, w, ws, None, "float16", "128x128x128_g128_pp")))
        if N % 16 == 0:  # the group-multiplier kernel: N % 16, groups of 128s
            x, xs, w, ws, b = _args("cuda", N, K, M)
            mult = torch.randint(0, 17, (K // 128, N), dtype=torch.int8, device="cuda")
            cfg = "256x128x128_coop_mult"
            calls.append(("s8s4_group_mult_gemm_cutlass", (x, xs, w, ws, mult, b, "bfloat16", cfg)))
        if M <= 16:  # the decode GEMV: int8 x, and a float x it quantizes itself
            x, xs, w, ws, b = _args("cuda", N, K, M, groups=K // 128)
            calls.append(("w4a8_gemv_cuda", (x, xs, w, ws, b, "bfloat16", "mma_n2k8_pf0")))
            xf = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            calls.append(("w4a8_gemv_cuda", (xf, None, w, ws, None, "float16", "mma_n4k2_pf2")))
            for bits, (e, m), config in ((8, (4, 3), "cp_n2k4"), (4, (2, 1), "cp_n1k8"), (6, (3, 2), "cp_n4k2")):
                xf, wf, sf, bf = (t.cuda() for t in _float_gemv_args(M, K, N, bits))
                calls.append(("float_weight_gemv_cuda", (xf, wf, sf, bf, e, m, config)))
        xf, wf, sf, bf = (t.cuda() for t in _float_gemv_args(M, K, N, 8))
        calls.append(("fp8_weight_gemm_cutlass", (xf, wf, sf, bf, "64x128x64_coop_sk")))
        for bits, (e, m), config in (
            (4, (2, 1), "wgmma_16x128"),
            (6, (2, 3), "wgmma_128x128"),
            (8, (4, 3), "wgmma_64x128"),
        ):
            xq, wq, sq, bq = (t.cuda() for t in _float_gemv_args(M, K, N, bits))
            calls.append(("float_weight_gemm_cuda", (xq, wq, sq, bq, e, m, config)))
        calls.append(("fp8_weight_gemm_cutlass", (xf.half(), wf, sf, None, "256x128x64_coop")))
    torch.save(calls, tmp_path / "args.pt")
    (tmp_path / "child.py").write_text(_GPU_CHILD)
    cmd = [
        sys.executable,
        str(tmp_path / "child.py"),
        str(torch_ops_library()),
        *(str(tmp_path / f) for f in ("args.pt", "outs.pt")),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = torch.load(tmp_path / "outs.pt")
    assert got["bad"].startswith("config: expected one of"), got["bad"]
    assert got["bad_dtype"].startswith("out_dtype: expected 'float16' or 'bfloat16', got 'float32'"), got["bad_dtype"]
    for (name, a), out in zip(calls, got["outs"]):
        ref = getattr(torch.ops.lowbit, name)(*a)  # the ctypes kernel, same launcher and config
        assert out.dtype == ref.dtype and torch.equal(out, ref), (name, a[-1], tuple(a[0].shape))


@pytest.mark.slow
def test_aoti_package_calls_the_cpp_ops_by_name(tmp_path):
    """~30 s (a C++ build): an AOTInductor package keeps the seven ops as calls by name (the proxy executor passes
    ``Tensor?`` and ``str`` arguments); on CPU they run the exact reference, equal to eager."""
    from examples.deploy_aoti import lowbit_ops_in_package, static_libstdcxx

    x, xs, w4, ws, b = _args(N=16, K=256, M=5)
    w8 = torch.randint(-8, 8, (16, 256), dtype=torch.int8)
    ws2 = torch.rand(16, 2)
    _, wf, sf, bf = _float_gemv_args(K=256, N=16, bits=4)
    _, w8f, s8f, _ = _float_gemv_args(K=256, N=16, bits=8)
    mult = torch.randint(0, 17, (2, 16), dtype=torch.int8)

    class Both(torch.nn.Module):
        def forward(self, x, xs):
            y = torch.ops.lowbit.s8s4_gemm_cutlass(x, xs, w4, ws, b, "bfloat16", "sm90", "128x128x128_coop")
            z = torch.ops.lowbit.s8s8_groupwise_gemm_cutlass(x, xs, w8, ws2, None, "float16", "128x128x128_g128")
            v = torch.ops.lowbit.w4a8_gemv_cuda(x, xs, w4, ws2, b, "bfloat16", "mma_n1k8_pf0")
            xf = (x.float() * xs[:, None]).bfloat16()
            u = torch.ops.lowbit.float_weight_gemv_cuda(xf, wf, sf, bf, 2, 1, "cp_n2k4")
            t = torch.ops.lowbit.fp8_weight_gemm_cutlass(xf, w8f, s8f, bf, "64x128x64_coop_sk")
            r = torch.ops.lowbit.float_weight_gemm_cuda(xf, wf, sf, bf, 2, 1, "wgmma_64x128")
            m = torch.ops.lowbit.s8s4_group_mult_gemm_cutlass(x, xs, w4, ws, mult, b, "bfloat16",
                                                              "256x128x128_coop_mult")  # fmt: skip
            return y, z, v, u, t, r, m

    batch = torch.export.Dim("batch", min=1, max=16)  # the GEMV takes up to 16 rows
    ep = torch.export.export(Both(), (x, xs), dynamic_shapes=({0: batch}, {0: batch}))
    # The default g++, not $CXX: the GPU machine's CXX links libstdc++ statically into packages, which then crash at
    # load in this process (docs/deploy.md; examples/deploy_aoti.py handles that case, this test is about the ops).
    with torch._inductor.config.patch({"cpp.cxx": (None, "g++")}):
        path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp_path / "both.pt2"))
    assert lowbit_ops_in_package(tmp_path / "both.pt2") == sorted(CPP_OPS)
    assert not static_libstdcxx(tmp_path / "both.pt2")
    runner = torch._inductor.aoti_load_package(path)
    for M in (1, 7):
        x, xs = x[:1].expand(M, -1).contiguous(), torch.rand(M)
        got, ref = runner(x, xs), Both()(x, xs)
        assert all(g.dtype == r.dtype and torch.equal(g, r) for g, r in zip(got, ref))
