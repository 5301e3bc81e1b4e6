"""Triton kernels. Each module imports triton at the top, so it is imported only from an op's CUDA impl
(or from tests and benchmarks), never by ``import lowbit_flex``."""
