"""The CUDA tensor-core W4A8 GEMV (``lowbit_flex.kernels.w4a8_gemv_cuda``) against the exact float64 definition on a
GPU, and its Python-side contract (config table vs header, support rules) on any machine."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.kernels import w4a8_gemv_cuda as mod
from lowbit_flex.kernels.s8s4_dispatch import Arch, arch_of
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import assert_fully_written, poison_
from tests.kernels._w4a8_exact import assert_close_to_exact, exact_f64, log_uniform, random_inputs

requires_gpu = pytest.mark.skipif(
    not torch.cuda.is_available() or arch_of(torch.device("cuda")) is Arch.OTHER,
    reason="needs an sm_80 / sm_90 GPU: the kernel is CUDA (mma.sync) with no CPU or interpreter path",
)
REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / "lowbit_flex/csrc/w4a8_gemv/w4a8_gemv.h"


def fp32_terms(K: int, group: int | None) -> int:
    """Float32 roundings beyond the output's: per channel the int32 -> float conversion of the sum (16x the dot may
    pass 2**24), the two scale products and the bias add; group-wise per 128-value chunk the scale product and the
    add (a chunk's int32 dot converts exactly), the adds of the K-split warps' and CTAs' partial sums (at most 16:
    16 warps, or 4 splits of 4 warps) and the same epilogue."""
    return 4 if group is None else 2 * (K // mod.CHUNK_K) + 20


def run(x, xs, q, ws, b, out_dtype, config):
    """The kernel on CUDA copies, into a poisoned output whose every element must be written; returns it on CPU."""
    dev = lambda t: None if t is None else t.cuda()
    M, N = x.shape[0], q.shape[0]
    out = poison_(torch.empty((M, N), dtype=out_dtype, device="cuda"))
    res = mod.s8s4_gemv_cuda(dev(x), dev(xs), pack_int4(q).cuda(), dev(ws), dev(b), out_dtype, config, out=out)
    assert res is out
    assert_fully_written(out)
    return out.cpu()


def check(M, N, K, group, bias, out_dtype, config):
    x, xs, q, ws, b = random_inputs(M, N, K, group, out_dtype, bias)
    out = run(x, xs, q, ws, b, out_dtype, config)
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms(K, group))


# M = 1..16 (one or two 8-token MMA tiles, padded columns), N ragged (rows past N clamped), K from one chunk to
# steps where a warp's chunks run past K, groups 128 / 256 / 384 / 1024 (a group spanning chunks of different
# steps), deep K (12288-16384) at M = 4..6.
CASES = [
    # M,  N,   K,     group, bias,  out_dtype
    (1, 9, 128, None, True, torch.bfloat16),
    (1, 264, 4096, 128, False, torch.float16),
    (2, 40, 11008, None, True, torch.bfloat16),
    (3, 130, 1536, 384, True, torch.bfloat16),
    (7, 24, 2304, 256, False, torch.float16),
    (8, 136, 640, None, False, torch.bfloat16),
    (9, 40, 4096, 128, True, torch.bfloat16),
    (16, 72, 14336, None, True, torch.float16),
    (16, 17, 1024, 256, True, torch.bfloat16),
    (13, 264, 8192, 128, False, torch.bfloat16),
    (6, 56, 12288, None, True, torch.bfloat16),
    (5, 24, 16384, 128, False, torch.float16),
    (4, 40, 14336, 1024, True, torch.bfloat16),  # 8 chunks per group
    (16, 200, 14336, 128, False, torch.bfloat16),  # split configs: a split's int8 x columns staged (115 / 57 KB)
    (11, 56, 640, 128, True, torch.float16),  # 5 chunks: 4 splits become 3 (none empty)
]  # fmt: skip


@requires_gpu
@pytest.mark.parametrize("config", mod.GEMV_CUDA_CONFIGS)
@pytest.mark.parametrize("M, N, K, group, bias, out_dtype", CASES)
def test_every_config(config, M, N, K, group, bias, out_dtype):
    check(M, N, K, group, bias, out_dtype, config)


SPLIT_PAIRS = [(c, c.replace("_s2", "").replace("_s4", "")) for c in mod.GEMV_CUDA_CONFIGS if "_s" in c]


@requires_gpu
@pytest.mark.parametrize("split, unsplit", SPLIT_PAIRS)
@pytest.mark.parametrize("M, N, K", [(1, 264, 4096), (16, 72, 14336), (7, 136, 1536), (9, 40, 640)])
@pytest.mark.parametrize("fused", [False, True])
def test_split_k_per_channel_gives_the_unsplit_bits(split, unsplit, M, N, K, fused):
    # Per channel the splits' int32 sums add exactly: a config split across a cluster's CTAs must give the bits of
    # the same config unsplit (whatever the split count, staged or not, x quantized in the kernel or before).
    if fused and not mod.fuses_quantization(M, K):
        pytest.skip("x is quantized in the kernel only where it fits (fuses_quantization)")
    x, xs, q, ws, b = random_inputs(M, N, K, None, torch.bfloat16, True)
    if fused:
        x, xs = torch.randn(M, K, dtype=torch.bfloat16), None
    outs = [run(x, xs, q, ws, b, torch.bfloat16, config) for config in (split, unsplit)]
    assert torch.equal(outs[0], outs[1])


def _inputs_written_just_before(config: str) -> None:
    """Every input is produced by GPU kernels queued immediately before the GEMV (the weight and x rewritten in
    place, no host sync). Launched programmatically (LOWBIT_FLEX_PDL=1, common/pdl.cuh) the GEMV may start before
    the previous kernel ends and only L2 prefetches may precede its wait: a load moved above the wait reads old
    values here."""
    M, N, K, group = 1, 264, 4096, 128
    x, xs, q, ws, b = random_inputs(M, N, K, group, torch.bfloat16, True)
    packed, x_dev, xs_dev = pack_int4(q).cuda(), x.cuda(), xs.cuda()
    ws_dev, b_dev = ws.cuda(), b.cuda()
    w_dev = torch.zeros_like(packed)
    out = poison_(torch.empty((M, N), dtype=torch.bfloat16, device="cuda"))
    mod.s8s4_gemv_cuda(x_dev, xs_dev, w_dev, ws_dev, b_dev, torch.bfloat16, config, out=out)  # warm, on zeros
    for _ in range(3):  # the same buffers: each round's writes land right before the GEMV reads them
        w_dev.copy_(packed.flip(0)).copy_(packed)  # two kernels; the last one leaves the real weight
        x_dev.mul_(-1).mul_(-1)
        mod.s8s4_gemv_cuda(x_dev, xs_dev, w_dev, ws_dev, b_dev, torch.bfloat16, config, out=out)
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out.cpu(), exact, magnitude, torch.bfloat16, fp32_terms(K, group))


@requires_gpu
@pytest.mark.parametrize("config", ["mma_n2k4_pf0", "mma_n1k8_pf2"])
def test_inputs_written_by_the_kernel_just_before(config):
    _inputs_written_just_before(config)


@requires_gpu
def test_inputs_written_just_before_with_programmatic_launch():
    # LOWBIT_FLEX_PDL is read once per process, so the programmatic launch runs in a child process.
    code = (
        "from tests.kernels.test_w4a8_gemv_cuda import _inputs_written_just_before as f\n"
        "for c in ('mma_n2k4_pf0', 'mma_n1k8_pf2', 'mma_n4k2_pf2'): f(c)\nprint('all ok')"
    )
    env = os.environ | {"LOWBIT_FLEX_PDL": "1"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("all ok"), r.stdout[-2000:] + r.stderr[-4000:]


@requires_gpu
@pytest.mark.parametrize("group", [None, 128])
def test_per_channel_sum_near_int32_limit(group):
    # Every product at its extreme (-128 * -8 = 1024, 16x in the MMA): the per-channel int32 sum of 16x the dot at
    # K = 2**17 - 128 is 2**31 - 2**21, the largest the kernel accepts.
    K = mod._MAX_K_PER_CHANNEL - mod.CHUNK_K
    x = torch.full((1, K), -128, dtype=torch.int8)
    q = torch.full((8, K), -8, dtype=torch.int8)
    xs, b = torch.ones(1), None
    ws = torch.full((8,), 2.0**-20) if group is None else torch.full((8, K // group), 2.0**-20)
    out = run(x, xs, q, ws, b, torch.bfloat16, mod.GEMV_CUDA_CONFIGS[0])
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out, exact, magnitude, torch.bfloat16, fp32_terms(K, group))


# Float x quantized in the kernel (M <= 8, M * K <= 64 KiB) or by the quantizer first (larger): bit-identical to
# the kernel on lowbit::quantize_int8_rowwise's values, and within bounds of the exact definition.
FUSED_CASES = [
    # x dtype,       M,  N,  K,     group
    (torch.bfloat16, 1, 72, 4096, None),
    (torch.float16, 3, 40, 2048, 128),
    (torch.float32, 2, 24, 384, None),
    (torch.bfloat16, 8, 16, 8192, 256),
    (torch.bfloat16, 1, 40, 65536, 128),  # 64 KiB of int8 x: the most shared memory the fused form stages
    (torch.float16, 8, 24, 16384, None),  # 128 KiB: quantized first
    (torch.bfloat16, 16, 24, 1024, 128),  # M > 8: quantized first
    (torch.float32, 1, 24, 65536, None),  # fused, but its 256 KiB float32 copy does not fit: read from global memory
]  # fmt: skip


@requires_gpu
@pytest.mark.parametrize("config", ["mma_n1k8_pf2", "mma_n4k4_pf0"])
@pytest.mark.parametrize("x_dtype, M, N, K, group", FUSED_CASES)
def test_fused_quantization(config, x_dtype, M, N, K, group):
    out_dtype = torch.bfloat16
    _, _, q, ws, b = random_inputs(M, N, K, group, out_dtype)
    xf = (torch.randn(M, K) * log_uniform((M, 1), -2.0, 2.0)).to(x_dtype)
    xf[0, 0] = 0.0
    out = run(xf, None, q, ws, b, out_dtype, config)
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(xf)  # the CPU reference quantizer
    ref = run(xq, xs.view(M), q, ws, b, out_dtype, config)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    exact, magnitude = exact_f64(xq, xs.view(M), q, ws, b)
    assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms(K, group))


@requires_gpu
def test_fused_zero_and_nan_rows():
    # A zero row (scale 1.0: its output is the rounded bias) and a NaN row, whose own output may be anything while
    # the other rows' must not change.
    M, N, K, out_dtype = 4, 40, 1024, torch.float16
    _, _, q, ws, b = random_inputs(M, N, K, 128, out_dtype)
    xf = torch.randn(M, K, dtype=torch.bfloat16)
    xf[1] = 0.0
    xf[2, 5] = float("nan")
    out = run(xf, None, q, ws, b, out_dtype, "mma_n1k8_pf2")
    clean = xf.clone()
    clean[2] = 0.0
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(clean)
    ref = run(xq, xs.view(M), q, ws, b, out_dtype, "mma_n1k8_pf2")
    torch.testing.assert_close(out[[0, 1, 3]], ref[[0, 1, 3]], rtol=0, atol=0)
    torch.testing.assert_close(out[1], b.to(out_dtype), rtol=0, atol=0)


def _quantize_then_gemv(xf, q, ws, b, out_dtype, config, finite_rows=None):
    """:func:`quantize_then_gemv_cuda` (the library's quantizer kernel, then the GEMV as its programmatic dependent
    on sm_90, in one foreign call) into a poisoned output whose every element must be written; returns it on CPU.
    ``finite_rows``: the rows checked for it (default all), where others may rightly hold NaN (a non-finite x)."""
    M, N = xf.shape[0], q.shape[0]
    out = poison_(torch.empty((M, N), dtype=out_dtype, device="cuda"))
    b_dev = None if b is None else b.cuda()
    res = mod.quantize_then_gemv_cuda(
        xf.cuda(), None, pack_int4(q).cuda(), ws.cuda(), b_dev, out_dtype, config, out=out
    )
    assert res is out
    assert_fully_written(out if finite_rows is None else out[finite_rows])
    return out.cpu()


@requires_gpu
@pytest.mark.parametrize("programmatic", [1, 0])
@pytest.mark.parametrize("config", ["mma_n1k8_pf0", "mma_n2k4_pf0", "mma_n2k4_pf2", "mma_n4k2_s2_pf2"])
@pytest.mark.parametrize(
    "x_dtype, M, N, K, group, out_dtype",
    [(torch.bfloat16, 1, 264, 14336, None, torch.bfloat16), (torch.float16, 1, 72, 8192, 128, torch.float16),
     (torch.float32, 2, 40, 4096, 256, torch.bfloat16), (torch.bfloat16, 9, 136, 4096, None, torch.bfloat16),
     (torch.float16, 16, 200, 14336, 128, torch.bfloat16), (torch.float32, 3, 24, 128, None, torch.float16),
     (torch.bfloat16, 5, 40, 2176, 128, torch.bfloat16)],
)  # fmt: skip
def test_quantize_then_gemv_gives_the_int8_launchs_bits(monkeypatch, programmatic, config, x_dtype, M, N, K, group,
                                                        out_dtype):  # fmt: skip
    # The library's quantizer kernel (rows split over CTAs, ragged last CTA at K = 128 and 2176) writes
    # lowbit::quantize_int8_rowwise's values, and the GEMV, launched as its programmatic dependent or after it, reads
    # them: the bits of the same config given the CPU reference quantizer's int8 x, within bounds of the exact value.
    monkeypatch.setattr(mod, "PROGRAMMATIC", programmatic)
    _, _, q, ws, b = random_inputs(M, N, K, group, out_dtype)
    xf = (torch.randn(M, K) * log_uniform((M, 1), -6.0, 3.0)).to(x_dtype)
    xf[0, 0] = 0.0
    out = _quantize_then_gemv(xf, q, ws, b, out_dtype, config)
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(xf)  # the CPU reference quantizer
    torch.testing.assert_close(out, run(xq, xs.view(M), q, ws, b, out_dtype, config), rtol=0, atol=0)
    exact, magnitude = exact_f64(xq, xs.view(M), q, ws, b)
    assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms(K, group))


@requires_gpu
def test_quantize_then_gemv_zero_nan_and_inf_rows_stay_in_their_rows():
    # A zero row (scale 1.0: its output is the rounded bias), a row with a NaN and one with an inf, whose own outputs
    # may be anything: the other rows' are the bits of the clean rows.
    M, N, K, out_dtype = 5, 40, 1024, torch.bfloat16
    _, _, q, ws, b = random_inputs(M, N, K, None, out_dtype)
    xf = torch.randn(M, K, dtype=torch.bfloat16)
    xf[1] = 0.0
    xf[2, 5] = float("nan")
    xf[3, 7] = float("inf")
    # Row 3's scale is inf: its outputs are ±inf, or NaN where its int32 sum is 0 (0 · inf), so the NaN poison cannot
    # tell whether rows 2 and 3 were written.
    out = _quantize_then_gemv(xf, q, ws, b, out_dtype, "mma_n2k4_pf0", finite_rows=[0, 1, 4])
    clean = xf.clone()
    clean[2:4] = 0.0
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(clean)
    ref = run(xq, xs.view(M), q, ws, b, out_dtype, "mma_n2k4_pf0")
    torch.testing.assert_close(out[[0, 1, 4]], ref[[0, 1, 4]], rtol=0, atol=0)
    torch.testing.assert_close(out[1], b.to(out_dtype), rtol=0, atol=0)


@requires_gpu
def test_quantize_then_gemv_in_a_cuda_graph_and_after_other_shapes():
    # The int8 rows live in per-stream scratch that the next eager call reuses (a larger shape first, then a smaller
    # one); a captured call gets its own, so a replay on new x written in place is right while eager calls run.
    N, K, group = 136, 4096, 128
    _, _, q, ws, b = random_inputs(16, N, K, group, torch.bfloat16)
    w, ws_dev, b_dev = pack_int4(q).cuda(), ws.cuda(), b.cuda()
    call = lambda x: mod.quantize_then_gemv_cuda(x, None, w, ws_dev, b_dev, torch.bfloat16, "mma_n2k4_pf0")

    def expected(xf):
        xq, xs = torch.ops.lowbit.quantize_int8_rowwise(xf.cpu())
        return run(xq, xs.view(-1), q, ws, b, torch.bfloat16, "mma_n2k4_pf0")

    big, small = torch.randn(16, K, dtype=torch.bfloat16), torch.randn(2, K, dtype=torch.bfloat16)
    out_big, out_small = call(big.cuda()), call(small.cuda())
    torch.testing.assert_close(out_big.cpu(), expected(big), rtol=0, atol=0)
    torch.testing.assert_close(out_small.cpu(), expected(small), rtol=0, atol=0)
    x_static = torch.randn(2, K, dtype=torch.bfloat16, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        call(x_static)  # warm-up on the capture stream
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        out_graph = call(x_static)
    for _ in range(2):
        fresh = torch.randn(2, K, dtype=torch.bfloat16)
        x_static.copy_(fresh)
        graph.replay()
        x_eager = torch.randn(2, K, dtype=torch.bfloat16)
        eager = call(x_eager.cuda())  # the eager scratch, on the stream the replay ran on
        torch.testing.assert_close(out_graph.cpu(), expected(fresh), rtol=0, atol=0)
        torch.testing.assert_close(eager.cpu(), expected(x_eager), rtol=0, atol=0)


@requires_gpu
@pytest.mark.parametrize("config", ["mma_n1k8_pf0", "mma_n4k2_s2_pf2"])
def test_quantize_then_gemv_sees_inputs_written_just_before(config):
    # The weight and x rewritten in place by kernels queued right before the quantizer, the same buffers every round:
    # the GEMV, started while the quantizer runs, must read the last rewrite of both.
    M, N, K, group = 4, 264, 4096, 128
    _, _, q, ws, b = random_inputs(M, N, K, group, torch.bfloat16)
    xf = torch.randn(M, K, dtype=torch.bfloat16)
    packed, x_dev, ws_dev, b_dev = pack_int4(q).cuda(), xf.cuda(), ws.cuda(), b.cuda()
    w_dev = torch.zeros_like(packed)
    out = poison_(torch.empty((M, N), dtype=torch.bfloat16, device="cuda"))
    for _ in range(3):
        w_dev.copy_(packed.flip(0)).copy_(packed)  # two kernels; the last one leaves the real weight
        x_dev.mul_(-1).mul_(-1)
        mod.quantize_then_gemv_cuda(x_dev, None, w_dev, ws_dev, b_dev, torch.bfloat16, config, out=out)
    assert_fully_written(out)
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(xf)
    exact, magnitude = exact_f64(xq, xs.view(M), q, ws, b)
    assert_close_to_exact(out.cpu(), exact, magnitude, torch.bfloat16, fp32_terms(K, group))


def _cases_without_staging() -> None:
    """int8 x and a float x quantized in the kernel, read from global memory instead of a staged shared copy."""
    for M, N, K, group in [(1, 40, 4096, None), (4, 72, 8192, 128), (9, 40, 2048, None), (16, 24, 4096, 256)]:
        for config in ("mma_n1k8_pf2", "mma_n2k4_pf0"):
            check(M, N, K, group, True, torch.bfloat16, config)
    test_fused_quantization("mma_n4k4_pf0", torch.bfloat16, 2, 40, 4096, 128)


@requires_gpu
def test_without_staging():
    # LOWBIT_W4A8_GEMV_STAGE_X is read once per process, so the unstaged launches run in a child process.
    code = "from tests.kernels.test_w4a8_gemv_cuda import _cases_without_staging as f\nf()\nprint('all ok')"
    env = os.environ | {"LOWBIT_W4A8_GEMV_STAGE_X": "0"}
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("all ok"), r.stdout[-2000:] + r.stderr[-4000:]


@requires_gpu
def test_library_configs_match():
    assert mod.library_config_names() == mod.GEMV_CUDA_CONFIGS


@requires_gpu
def test_launcher_rejects_what_it_cannot_take():
    # The C++ problem check is the last line of defence (the dispatch never sends these): a clear error, no launch.
    x = torch.randint(-8, 8, (1, 96), dtype=torch.int8, device="cuda")
    w = torch.zeros((8, 48), dtype=torch.int8, device="cuda")
    with pytest.raises(RuntimeError, match="invalid argument"):
        mod.s8s4_gemv_cuda(x, torch.ones(1, device="cuda"), w, torch.ones(8, device="cuda"), None, torch.bfloat16,
                           "mma_n1k8_pf2")  # fmt: skip


@requires_gpu
@pytest.mark.parametrize(
    "change",
    ["int8 x", "x code 4", "out dtype", "misaligned x", "misaligned xq", "M 17", "programmatic 2", "no xq_scale"],
)
def test_quantize_then_launcher_rejects_what_it_cannot_take(change):
    # The C++ checks of the one-call entry (the dispatch never sends these): a clear error, no launch.
    M, N, K = 2, 8, 256
    x = torch.randn(M + 1, K, device="cuda", dtype=torch.bfloat16)
    xq = torch.empty(M * K + 32, dtype=torch.int8, device="cuda")
    xs = torch.empty(M + 1, device="cuda")
    w, ws = torch.zeros((N, K // 2), dtype=torch.int8, device="cuda"), torch.ones(N, device="cuda")
    out = torch.empty((M + 1, N), dtype=torch.bfloat16, device="cuda")
    args = dict(config=0, x_dtype=mod.X_DTYPE_CODE[torch.bfloat16], out_dtype=mod.OUT_DTYPE_CODE[torch.bfloat16],
                x=x.data_ptr(), xq=xq.data_ptr(), xs=xs.data_ptr(), M=M, programmatic=1)  # fmt: skip
    args.update({
        "int8 x": dict(x_dtype=mod.X_DTYPE_CODE[torch.int8]), "x code 4": dict(x_dtype=4),
        "out dtype": dict(out_dtype=-1), "misaligned x": dict(x=x.data_ptr() + 2),
        "misaligned xq": dict(xq=xq.data_ptr() + 8), "M 17": dict(M=17), "programmatic 2": dict(programmatic=2),
        "no xq_scale": dict(xs=None),
    }[change])  # fmt: skip
    a = args
    status = mod._quantize_then_launcher()(
        a["config"], a["x_dtype"], a["out_dtype"], a["x"], a["xq"], a["xs"], w.data_ptr(), ws.data_ptr(), 0, None,
        out.data_ptr(), a["M"], N, K, a["programmatic"], torch.cuda.current_stream().cuda_stream,
    )  # fmt: skip
    with pytest.raises(RuntimeError, match="invalid argument"):
        mod.cuda_build.check_status(status, "w4a8 quantizer and GEMV")
    torch.cuda.synchronize()  # a launch on the bad arguments would fault here


def test_config_table_matches_header():
    names = re.findall(r'X\(\d+, "([^"]+)"', HEADER.read_text())
    assert tuple(names) == mod.GEMV_CUDA_CONFIGS


def test_config_names_say_their_columns():
    # X(index, name, warps_n, warps_k, prefetch, splits): a name says every column (no split: no "_s").
    rows = re.findall(r'X\((\d+), "([^"]+)", (\d+), (\d+), (\d+), (\d+)\)', HEADER.read_text())
    assert len(rows) == len(mod.GEMV_CUDA_CONFIGS)
    for index, name, wn, wk, prefetch, splits in rows:
        split = "" if splits == "1" else f"_s{splits}"
        assert name == f"mma_n{wn}k{wk}{split}_pf{prefetch}" == mod.GEMV_CUDA_CONFIGS[int(index)]


def test_limits_match_header():
    # The C++ launcher checks these itself (problem_ok); the Python side must route shapes by the same numbers.
    consts = {n: eval(v) for n, v in re.findall(r"constexpr int (k\w+) = ([^;]+);", HEADER.read_text())}
    assert consts["kMaxM"] == mod.MAX_M
    assert (consts["kMaxFusedM"], consts["kMaxFusedXBytes"]) == (mod.MAX_FUSED_M, mod._MAX_FUSED_X_BYTES)
    assert consts["kMaxKPerChannel"] == mod._MAX_K_PER_CHANNEL


@pytest.mark.parametrize(
    "M, K, group, ok",
    [
        (1, 128, None, True), (16, 4096, 128, True), (17, 4096, None, False), (0, 4096, None, False),
        (1, 96, None, False), (1, 4160, None, False), (1, 2**17 - 128, None, True), (1, 2**17, None, False),
        (1, 2**17, 128, True), (1, 4096, 64, False), (1, 4096, 384, False), (1, 4608, 384, True),
    ],
)  # fmt: skip
def test_supports(M, K, group, ok):
    assert mod.gemv_cuda_supports(M, K, group) is ok


def test_fusion_limit():
    assert mod.fuses_quantization(1, 65536) and mod.fuses_quantization(8, 8192)
    assert not mod.fuses_quantization(9, 1024) and not mod.fuses_quantization(2, 65536)
