"""Helpers shared by the tests, the demo and the GPU correctness checks.

Kept in the package (like ``torch.testing``) so the benchmark harness on the GPU machine uses the same checks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch

from lowbit_flex.kernels.arch import triton_interpreting

# Values that no kernel produces by accident: a kernel that skips an element leaves one of these behind.
_POISON = {
    torch.int8: -128,  # outside the symmetric range [-127, 127] every int8 quantizer here produces
    torch.int32: -(2**31),
    torch.uint8: 0xFF,  # NaN where the bytes are fp8 codes (e4m3fn and e5m2)
}


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill ``t`` in place with a value no correct kernel writes (NaN for floats)."""
    if t.is_floating_point():
        return t.fill_(float("nan"))
    return t.fill_(_POISON.get(t.dtype, torch.iinfo(t.dtype).min))


def assert_fully_written(t: torch.Tensor, name: str = "output") -> None:
    """Fail if any element still holds the poison value of :func:`poison_`."""
    if t.is_floating_point():
        bad = torch.isnan(t)
    else:
        bad = t == _POISON.get(t.dtype, torch.iinfo(t.dtype).min)
    n = int(bad.sum())
    if n:
        idx = bad.nonzero()[0].tolist()
        raise AssertionError(f"{name}: {n} of {t.numel()} elements were not written (first at {idx})")


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``‖out − ref‖ / ‖ref‖`` in float64; NaN anywhere gives NaN (so it never passes a ``<=`` check)."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    return float(torch.linalg.vector_norm(out64 - ref64) / torch.linalg.vector_norm(ref64).clamp_min(1e-300))


def assert_rel_error(out: torch.Tensor, ref: torch.Tensor, tol: float, name: str = "output") -> float:
    if out.shape != ref.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    err = rel_error(out, ref)
    if not err <= tol:  # written so that NaN fails
        raise AssertionError(f"{name}: relative error {err:.3e} > {tol:.1e}")
    return err


def assert_row_isolated(out: torch.Tensor, clean: torch.Tensor, row: tuple, *, row_nan: bool | None) -> None:
    """Attention outputs ``(B, H, L, D)`` from an input with a non-finite value in query ``row`` (``(b, h, i)``) and
    from the same input with that value 0: every other row equal bit for bit and finite; the row itself all NaN
    (``row_nan=True``), all finite (``False``) or unchecked (``None``)."""
    others = torch.ones(out.shape[:3], dtype=torch.bool)
    others[row] = False
    assert torch.equal(out[others], clean[others])
    assert bool(torch.isfinite(out[others]).all())
    if row_nan is not None:
        assert bool(out[row].isnan().all() if row_nan else torch.isfinite(out[row]).all()), out[row]


def assert_raises_eager_and_fake(op: Callable, kwargs: dict, exc: type[Exception], match: str) -> None:
    """``op(**kwargs)`` raises ``exc`` matching ``match`` eagerly and, when every tensor is on the CPU, also on fake
    tensors (what ``torch.compile`` and ``torch.export`` trace): the same check, the same message, both paths."""
    import pytest  # a test helper: only tests call it

    with pytest.raises(exc, match=match):
        op(**kwargs)
    if all(v.device.type == "cpu" for v in kwargs.values() if isinstance(v, torch.Tensor)):
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
            op(**{k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()})


def opcheck(op: Callable, samples: Iterable[tuple[tuple, dict]], test_utils: tuple[str, ...] | None = None) -> None:
    """Run ``torch.library.opcheck`` (schema, fake tensor, autograd registration, AOT dispatch) on each sample.
    ``test_utils`` narrows the checks (e.g. opcheck's schema check compares outputs with ``torch.allclose``, which
    has no float8 kernel)."""
    for args, kwargs in samples:
        if test_utils is None:
            torch.library.opcheck(op, args, kwargs)
        else:
            torch.library.opcheck(op, args, kwargs, test_utils=test_utils)


def run_exported_in_fresh_process(ep: torch.export.ExportedProgram, args: tuple, tmp_dir: str | os.PathLike):
    """``torch.export.save`` ``ep``, then ``torch.export.load`` it in a new CPU-only Python process that has run only
    ``import lowbit_flex``, call it on ``args`` there and return its output: what a user loading a saved quantized
    model gets."""
    import subprocess
    import sys
    from pathlib import Path

    import lowbit_flex

    d = Path(tmp_dir)
    torch.export.save(ep, d / "program.pt2")
    torch.save(args, d / "args.pt")
    code = (
        "import sys, torch, lowbit_flex\n"
        "d = sys.argv[1]\n"
        "ep = torch.export.load(d + '/program.pt2')\n"
        "torch.save(ep.module()(*torch.load(d + '/args.pt')), d + '/out.pt')\n"
    )
    root = str(Path(lowbit_flex.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", code, str(d)], check=True, env=env, cwd=root, timeout=120)
    return torch.load(d / "out.pt")


def w4a8_exact_f64(x, xs, q, ws, bias=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The W4A8 linear by definition, for tests and sanitizer drivers: ``x`` int8 ``(M, K)``, ``xs`` ``(M,)``, ``q``
    int4 values as int8 ``(N, K)``, ``ws`` ``(N,)`` or ``(N, groups)``, ``bias`` ``(N,)`` or None, all on one device.
    Float64 products of integers are exact (``|dot| < 2**53``); scales apply in another order than the kernels'.
    Returns ``(exact, magnitude)``: the float64 result and the summed ``|products| · |scales|`` (plus ``|bias|``),
    which bounds what float32 sums of partials can round (scales may be negative: integer group multipliers)."""
    (M, K), N = x.shape, q.shape[0]
    groups = 1 if ws.dim() == 1 else ws.shape[1]
    g = K // groups
    xd, qd, wsd = x.double(), q.double(), ws.double().reshape(N, groups)
    out = torch.zeros(M, N, dtype=torch.float64, device=x.device)
    magnitude = torch.zeros(M, N, dtype=torch.float64, device=x.device)
    # One group at a time, with (M, N) temporaries: an (M, N, groups) float64 tensor of an LLM-sized layer is
    # gigabytes (1000 x 4104 x 112: 3.7 GB), several per call, in each of the GPU machine's parallel test workers.
    for j in range(groups):
        xj, qj = xd[:, j * g : (j + 1) * g], qd[:, j * g : (j + 1) * g]
        scales = xs.double()[:, None] * wsd[None, :, j]
        out += (xj @ qj.T) * scales
        magnitude += (xj.abs() @ qj.abs().T) * scales.abs()
    if bias is not None:
        out = out + bias.double()
        magnitude = magnitude + bias.double().abs()
    return out, magnitude


def w4a8_rounding_misses(out: torch.Tensor, exact: torch.Tensor, magnitude: torch.Tensor, fp32_terms: int) -> int:
    """How many elements of ``out`` are not within one rounding to ``out.dtype`` of ``exact`` (half an ulp, and half
    the smallest subnormal where the value is subnormal: float16 outputs below 6.1e-5 round in absolute steps of
    2**-24) plus ``fp32_terms`` float32 roundings of ``magnitude`` (see :func:`w4a8_exact_f64`). NaN counts."""
    finfo = torch.finfo(out.dtype)
    bound = exact.abs() * (finfo.eps / 2) + finfo.smallest_normal * finfo.eps / 2 + fp32_terms * 2.0**-24 * magnitude
    return int((~((out.double().cpu() - exact).abs() <= bound)).sum())


def mma_key_order_source_rows(n_keys: int) -> torch.Tensor:
    """The key each row of an e4m3 v in the P·V MMA's key order holds (``quantize_qkv_triton(...,
    v_mma_key_order=True)``), written from the layout's definition for tests: ``n_keys`` rounded up to 16 rows, row
    ``16g + 4a + 2h + l`` holding key ``16g + 8h + 2a + l`` (rows whose key is ``>= n_keys`` are zeros)."""
    r = torch.arange(-(-n_keys // 16) * 16)
    return (r // 16) * 16 + (r // 2 % 2) * 8 + (r // 4 % 4) * 2 + r % 2


def kernel_device() -> str | None:
    """Where the Triton kernels can run in this process: ``"cuda"``, ``"cpu"`` (interpreter) or ``None``."""
    if torch.cuda.is_available():
        return "cuda"
    return "cpu" if triton_interpreting() else None
