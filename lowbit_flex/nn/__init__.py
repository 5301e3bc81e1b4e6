"""Quantized modules and ``quantize_(model, config)``."""

__all__: list[str] = []
