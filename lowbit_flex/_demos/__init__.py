"""One module per capability, each with ``run(device: str) -> list[Row]``; ``python -m lowbit_flex.demo`` runs them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Row:
    capability: str
    path: str
    rel_error: float  # ‖out − float64 reference‖ / ‖reference‖ (for quantizers: the quantization error itself)
    ms: float | None = None
    baseline: str | None = None
    baseline_ms: float | None = None


def time_ms(fn, *args) -> float:
    """Median CUDA time of ``fn(*args)`` in milliseconds."""
    import triton.testing

    return float(triton.testing.do_bench(lambda: fn(*args), warmup=10, rep=50, return_mode="median"))
