"""Backend choice for ``lowbit::s8s4_linear`` on CUDA: one data table, first supported match wins.

The table is keyed by GPU architecture family, M (rows of the input), and scale kind; each rule names a backend.
A rule matches when all its given fields match; its backend is used if it can take the shape (CUTLASS: the
wrapper is importable and ``cutlass_s8s4_supported`` accepts arch and alignment), else the next rule is tried.
Triton takes every shape the op accepts, so the last rule always succeeds. ``docs/w4a8.md`` shows this table with
the measurements behind it.

For benchmarking, ``_backend=`` (or the environment variable ``LOWBIT_S8S4_BACKEND``) forces one backend, and
``_config=`` one tile config of it; a forced backend that cannot take the shape raises instead of falling back.
"""

from __future__ import annotations

import enum
import functools
import os
from dataclasses import dataclass

import torch


class Arch(enum.Enum):
    SM80 = "sm80"  # Ampere and Ada (sm_80, sm_86, sm_89): mma.sync
    SM90 = "sm90"  # Hopper: WGMMA
    OTHER = "other"


class ScaleKind(enum.Enum):
    PER_CHANNEL = "per_channel"
    GROUPWISE = "groupwise"


class Backend(enum.Enum):
    TRITON = "triton"
    CUTLASS_SM80 = "cutlass_sm80"  # the CUTLASS 2.x mixed-input kernel (runs on sm_80 and sm_90)
    CUTLASS_SM90 = "cutlass_sm90"  # the CUTLASS 3.x WGMMA kernel (sm_90a only)


@dataclass(frozen=True)
class Rule:
    backend: Backend
    config: str | None = None  # a tile config of that backend; None: the backend's default for M
    arch: Arch | None = None  # None: any
    scale: ScaleKind | None = None
    max_m: int | None = None  # rule applies when M <= max_m
    wide: bool | None = None  # True: only when N > K (many output channels, short reduction)


# Measured on an H200 (benchmarks/bench_s8s4_linear.py, 2026-11-22; docs/w4a8.md has the table). CUTLASS takes
# per-channel scales only, so group-wise goes to Triton. Decode-sized M: the sm90 warp-specialised 16-row tile
# wins when N > K (2.1x bf16 at K=4096, N=14336), the sm80 16-row tile when K >= N (1.3-1.4x). M <= 64: 128-row
# cooperative WGMMA tiles for wide layers, the sm80 32-row tile otherwise. Larger M: sm90 cooperative WGMMA,
# 256x128 from M > 512 (1.7-1.9x bf16, 1.4-1.5x torch._int_mm at M >= 1024). Ampere (sm_80) is unmeasured: it
# takes the sm80 rules with the wrapper's default tiles.
DISPATCH_TABLE: tuple[Rule, ...] = (
    Rule(Backend.TRITON, scale=ScaleKind.GROUPWISE),
    Rule(Backend.CUTLASS_SM90, "16x128x128_ws", arch=Arch.SM90, max_m=16, wide=True),
    Rule(Backend.CUTLASS_SM80, "16x128x128_s4", max_m=16),
    Rule(Backend.CUTLASS_SM90, "128x128x128_coop", arch=Arch.SM90, max_m=64, wide=True),
    Rule(Backend.CUTLASS_SM80, "32x128x128_s4", max_m=64),
    Rule(Backend.CUTLASS_SM90, "128x128x128_coop", arch=Arch.SM90, max_m=512),
    Rule(Backend.CUTLASS_SM90, "256x128x128_coop", arch=Arch.SM90),
    Rule(Backend.CUTLASS_SM80, arch=Arch.SM80),
    Rule(Backend.TRITON),
)

_ENV_BACKEND = "LOWBIT_S8S4_BACKEND"


def arch_of(device: torch.device) -> Arch:
    major = torch.cuda.get_device_capability(device)[0] if device.type == "cuda" else 0
    return {8: Arch.SM80, 9: Arch.SM90}.get(major, Arch.OTHER)


def scale_kind_of(weight_scale: torch.Tensor) -> ScaleKind:
    # (N, 1) is one group spanning K: the same math as per-channel.
    return ScaleKind.GROUPWISE if weight_scale.dim() == 2 and weight_scale.shape[1] > 1 else ScaleKind.PER_CHANNEL


def _cutlass_variant(backend: Backend) -> str:
    return {Backend.CUTLASS_SM80: "sm80", Backend.CUTLASS_SM90: "sm90"}[backend]


def supported(backend: Backend, arch: Arch, scale: ScaleKind, M: int, N: int, K: int) -> bool:
    if backend is Backend.TRITON:
        return True
    if scale is not ScaleKind.PER_CHANNEL or arch is Arch.OTHER:
        return False
    try:  # merged from the CUTLASS branch; absent in builds without it
        from lowbit_flex.kernels.s8s4_cutlass import cutlass_s8s4_supported
    except ImportError:
        return False
    return cutlass_s8s4_supported(_cutlass_variant(backend), M, N, K)


@functools.lru_cache(maxsize=4096)
def choose(arch: Arch, scale: ScaleKind, M: int, N: int, K: int) -> Rule:
    """The first rule of :data:`DISPATCH_TABLE` that matches and whose backend can take the shape. Memoised: the
    answer depends only on these arguments, and the table walk (with an import attempt) would otherwise run in
    front of every decode-sized GEMM (~15 µs)."""
    for rule in DISPATCH_TABLE:
        if (
            (rule.arch is None or rule.arch is arch)
            and (rule.scale is None or rule.scale is scale)
            and (rule.max_m is None or rule.max_m >= M)
            and (rule.wide is None or rule.wide == (N > K))
            and supported(rule.backend, arch, scale, M, N, K)
        ):
            return rule
    raise AssertionError("DISPATCH_TABLE must end with a rule every shape matches")


def s8s4_linear_cuda(
    input: torch.Tensor,
    input_scale: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    *,
    _backend: Backend | str | None = None,
    _config: object = None,
) -> torch.Tensor:
    """Run the chosen backend on validated arguments (the op's checks ran). ``_backend`` / ``_config`` force a
    backend / tile config (a :class:`~lowbit_flex.kernels.s8s4_linear.TritonConfig` or a name in
    ``TRITON_CONFIGS``; a name in ``CUTLASS_CONFIGS[variant]`` for CUTLASS) for benchmarks and tests."""
    K, N = input.shape[-1], weight.shape[0]
    x = input.reshape(-1, K)
    M = x.shape[0]
    # The kernels read float32 scales and bias; these casts are no-ops for the usual float32 scales.
    xs = input_scale.reshape(M).float()
    ws = weight_scale.float()
    b = bias.float() if bias is not None else None
    arch, scale = arch_of(x.device), scale_kind_of(weight_scale)
    forced = _backend or os.environ.get(_ENV_BACKEND)
    if forced:
        backend = Backend(forced)
        if not supported(backend, arch, scale, M, N, K):
            raise ValueError(f"_backend: {backend.value} cannot take M={M}, N={N}, K={K} ({scale.value}, {arch.value})")
    else:
        rule = choose(arch, scale, M, N, K)
        backend, _config = rule.backend, rule.config

    if backend is Backend.TRITON:
        from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS, s8s4_linear_triton

        config = TRITON_CONFIGS[_config] if isinstance(_config, str) else _config
        out = s8s4_linear_triton(x, xs, weight, ws, b, out_dtype, config)
    else:
        from lowbit_flex.kernels.s8s4_cutlass import s8s4_linear_cutlass

        out = s8s4_linear_cutlass(x, xs, weight, ws.reshape(N), b, out_dtype, _cutlass_variant(backend), _config)
    return out.view(*input.shape[:-1], N)
