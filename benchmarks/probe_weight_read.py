"""The read ceiling of a decode GEMV: how fast the H200 streams a packed (N, K/2) weight with the W4A8 GEMV's access
pattern and with alternatives, reading only (``benchmarks/probe_weight_read.cu``, built here with nvcc), next to
bf16 ``F.linear`` on the same shape. CUDA-graph medians, weights rotated past L2. Hopper (sm_90) only: the TMA
patterns use its bulk copies.

    python3 -m benchmarks.probe_weight_read

Patterns (warps per CTA ``n`` x ``k`` as in the GEMV configs, ``x2``: two CTAs per SM):
``frag``  the GEMV's lanes: each load is 8 rows x 64 bytes (lane g, t: rows g and g + 8, bytes t * 16 + u * 64);
``pair``  the same bytes per step, each load 2 rows x 256 contiguous bytes;
``tmaS``  1D bulk copies (TMA) of whole row runs into an S-stage shared-memory ring, read back by every warp.
H200 numbers and what they decided: docs/measurements/h200_run38_w4a8_decode_limits.md.
"""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import torch

from benchmarks.harness import time_ms

_SRC = Path(__file__).with_suffix(".cu")
_ROTATE_BYTES = 256 << 20
SHAPES_KN = [(8192, 8192), (4096, 14336), (14336, 4096), (4096, 4096)]
# name: (mode: 0 frag, 1 pair, S >= 2 TMA with S stages; warps_n, warps_k, CTAs per SM)
PATTERNS = {
    "frag n2k8": (0, 2, 8, 1), "frag n1k8 x2": (0, 1, 8, 2), "frag n4k4": (0, 4, 4, 1), "frag n2k4 x2": (0, 2, 4, 2),
    "pair n2k8": (1, 2, 8, 1), "pair n1k8 x2": (1, 1, 8, 2), "pair n4k4": (1, 4, 4, 1),
    "tma3 n2k8": (3, 2, 8, 1), "tma4 n1k8": (4, 1, 8, 1), "tma3 n1k8 x2": (3, 1, 8, 2), "tma2 n2k4 x2": (2, 2, 4, 2),
    "tma4 n1k4 x2": (4, 1, 4, 2),
}  # fmt: skip


def _library() -> ctypes._CFuncPtr:
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}" + ("a" if major == 9 else "")
    lib = Path("build") / "probe_weight_read" / f"libprobe_weight_read_{arch}.so"
    if not lib.exists() or lib.stat().st_mtime < _SRC.stat().st_mtime:
        lib.parent.mkdir(parents=True, exist_ok=True)
        flags = ["-O3", "-std=c++17", f"-arch={arch}", "-shared", "-Xcompiler", "-fPIC"]
        cmd = ["nvcc", *flags, "-o", str(lib), str(_SRC)]
        subprocess.run(cmd, check=True)
    fn = ctypes.CDLL(str(lib)).read_bench
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (mode, w, N, Kb, warps_n, warps_k, CTAs per SM, sink, stream)
    fn.argtypes = [i32, ptr, i32, i32, i32, i32, i32, ptr, ptr]
    fn.restype = i32
    return fn


def main() -> None:
    read = _library()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    sink = torch.empty(sms * 2 * 512, dtype=torch.int32, device="cuda")  # one word per thread of the largest grid

    def run(w, mode, wn, wk, per_sm):
        N, Kb = w.shape
        stream = torch.cuda.current_stream().cuda_stream
        status = read(mode, w.data_ptr(), N, Kb, wn, wk, per_sm, sink.data_ptr(), stream)
        if status:
            raise RuntimeError(f"CUDA error {status}")

    big = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    t = time_ms(torch.clone, (big,), graph=False)
    print(f"copy (clone 1 GiB, read + write) {2 * big.numel() / t / 1e6:.0f} GB/s")
    for K, N in SHAPES_KN:
        Kb = K // 2
        n = max(2, min(16, _ROTATE_BYTES // (N * Kb)))
        ws = [torch.randint(-128, 128, (N, Kb), dtype=torch.int8, device="cuda") for _ in range(n)]
        wb = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(max(2, n // 4))]
        x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
        tb = time_ms(torch.nn.functional.linear, *[(x, w) for w in wb])
        print(f"K={K} N={N}: int4 weight {N * Kb / 1e6:.1f} MB; bf16 F.linear {tb * 1e3:.2f} us "
              f"({N * K * 2 / tb / 1e6:.0f} GB/s)")  # fmt: skip
        rows = []
        for name, (mode, wn, wk, per_sm) in PATTERNS.items():
            tm = time_ms(lambda w, a=(mode, wn, wk, per_sm): run(w, *a), *[(w,) for w in ws])
            rows.append((tm, name))
        for tm, name in sorted(rows):
            print(f"   {name:14s} {tm * 1e3:7.2f} us {N * Kb / tm / 1e6:6.0f} GB/s  x bf16 {tb / tm:.2f}")


if __name__ == "__main__":
    main()
