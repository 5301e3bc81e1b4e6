"""Triton pieces every kernel shares: launch configs, a cached eager launcher, the deterministic split-K reduce, the
interpreter-safe dot.

Imports Triton at the top, so only kernel modules import it (never an op file at module level).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from lowbit_flex.kernels.arch import triton_interpreting


@dataclass(frozen=True)
class LaunchConfig:
    """One launch configuration of a tiled kernel: tile sizes and Triton's ``num_warps`` / ``num_stages``.

    ``block_m`` / ``block_n`` tile the output; ``block_k`` is the reduction step in the kernel's own unit (int8
    values for W4A8, packed units for the weight-only kernels; 0 where the kernel derives it from the head dim).
    Kernels with more knobs subclass it; each kernel module keeps its configs in one named table."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


class PlanLaunch:
    """``kernel[grid](*args, **meta)`` for one launch plan (a kernel, its grid and constexprs, fixed per shape key).

    Eager decode loops launch the same few shapes thousands of times, and Triton's ``JITFunction.run`` re-binds and
    re-specializes every argument on each call (~10-20 us of host time per launch). Where that work cannot change
    the answer, this launches the compiled kernel found on the first call directly: the plan fixes every int
    argument and constexpr, so only the tensors' dtypes and 16-byte alignment (what Triton specializes pointers on)
    can differ, and they form the cache key. Anything else takes ``wrap_triton`` (what ``torch.compile`` /
    ``torch.export`` trace through a ``triton_op``): non-CUDA or subclass tensors (fake, functional), an active
    dispatch mode, the interpreter, or Triton launch hooks (profilers)."""

    __slots__ = ("_compiled", "_constexprs", "_interpreted", "_tensors", "grid", "kernel", "meta", "traced")

    def __init__(
        self, kernel, grid: tuple[int, ...], meta: dict, tensors: int | None = None, traced: PlanLaunch | None = None
    ) -> None:
        """``tensors``: where every tensor argument comes first, their count; otherwise the key reads the positions
        that held tensors on the first direct call. ``traced``: the plan to launch instead where only ``wrap_triton``
        is right, for a Gluon ``kernel`` (``wrap_triton`` cannot trace one) or one that builds TMA descriptors on the
        device (a compiled graph would need their scratch): the same arguments, a Triton kernel without them."""
        self.kernel, self.grid, self.meta = kernel, tuple(grid) + (1,) * (3 - len(grid)), meta
        self.traced = traced
        # Positions of the tensor arguments (the key reads only those): the first ``tensors`` if given, else found
        # on the first direct call (a launcher passes the same argument kinds on every call of one plan).
        self._tensors: tuple[int, ...] | None = None if tensors is None else tuple(range(tensors))
        self._constexprs: tuple | None = None  # values of the parameters after the positional ones, in order
        self._compiled: dict[tuple, object] = {}
        self._interpreted = triton_interpreting()  # fixed when the kernels were decorated

    def __call__(self, *args) -> None:
        key = self._direct_key(args)
        compiled = None if key is None else self._compiled.get(key)
        if compiled is None:
            if key is None:
                if self.traced is not None:
                    self.traced(*args)
                else:
                    wrap_triton(self.kernel)[self.grid](*args, **self.meta)
                return
            compiled = self.kernel[self.grid](*args, **self.meta)  # compiles (or finds) and launches
            if self._constexprs is None:
                self._constexprs = tuple(self.meta[n] for n in self.kernel.arg_names[len(args) :])
            self._compiled[key] = compiled
            return
        # The call JITFunction.run ends with, minus its per-call binding (Triton 3.6 - 3.9 share this signature),
        # on the current device's current stream as Triton uses (the key holds the device: a module per device).
        stream = torch._C._cuda_getCurrentRawStream(key[0])
        g = self.grid
        compiled.run(g[0], g[1], g[2], stream, compiled.function, compiled.packed_metadata, None, None, None,
                     *args, *self._constexprs)  # fmt: skip

    def bind(self, *args) -> BoundLaunch | None:
        """This plan's compiled kernel for ``args`` (compiled now if needed, not launched), bound to its grid and
        every argument after the tensors, or None where only ``wrap_triton`` is right (as :meth:`__call__`
        decides). The tensors must come first (``tensors`` given); the bound launch then takes them, or their
        device addresses as ints, in order. ``args`` fix what the kernel was specialized on: the tensors' dtypes and
        16-byte alignment, the current device, every later argument; keeping those the same is the caller's job."""
        key = self._direct_key(args)
        if key is None or self._tensors is None or any(type(a) is torch.Tensor for a in args[len(self._tensors) :]):
            return None
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self.kernel.warmup(*args, grid=self.grid, **self.meta)
            if self._constexprs is None:
                self._constexprs = tuple(self.meta[n] for n in self.kernel.arg_names[len(args) :])
            self._compiled[key] = compiled
        return BoundLaunch(compiled, self.grid, key[0], (*args[len(self._tensors) :], *self._constexprs))

    def _direct_key(self, args: tuple) -> tuple | None:
        """The cache key of a direct launch (the current device, tensor dtypes and 16-byte alignment), or None where
        only ``wrap_triton`` is right. ``args[0]`` is a tensor in every kernel that uses this."""
        if self._interpreted or not args[0].is_cuda or torch._C._len_torch_dispatch_stack():
            return None
        if launch_hooks_active():
            return None
        positions = self._tensors
        if positions is None:
            positions = self._tensors = tuple(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
        # Triton launches on the current device; compiled modules are per device. (CUDA is initialized: args[0] is a
        # CUDA tensor, so the raw getter, without torch.cuda.current_device's lazy-init check.)
        key = [torch._C._cuda_getDevice()]
        for i in positions:
            a = args[i]
            if type(a) is not torch.Tensor:  # fake, functional or another subclass: traced, not launched
                return None
            key.append((a.dtype, a.data_ptr() % 16 == 0))
        return tuple(key)


class BoundLaunch:
    """A compiled kernel with its grid, device and every non-tensor argument fixed (:meth:`PlanLaunch.bind`): a call
    passes the pointer arguments only, as tensors or as device addresses (ints, which Triton's launcher takes as
    they are: no ``data_ptr`` call or pointer query per argument), and launches on the device's current stream.
    For eager paths that keep a plan per metadata key, where even :class:`PlanLaunch`'s per-call key costs host
    time; they must fall back to :class:`PlanLaunch` where it would not launch directly (:meth:`hooked`)."""

    __slots__ = ("_device", "_function", "_grid", "_metadata", "_run", "_tail")

    def __init__(self, compiled, grid: tuple[int, int, int], device: int, tail: tuple) -> None:
        self._run = compiled.run  # first: reading ``run`` loads the module (Triton's lazy handles), then ``function``
        self._function, self._metadata = compiled.function, compiled.packed_metadata
        self._grid, self._device, self._tail = grid, device, tail

    @staticmethod
    def hooked() -> bool:
        """Whether Triton launch hooks are set (profilers), which see only launches through Triton's own path: a
        caller then launches through :class:`PlanLaunch` (which checks this itself)."""
        return launch_hooks_active()

    def __call__(self, *pointers) -> None:
        g = self._grid
        stream = torch._C._cuda_getCurrentRawStream(self._device)
        self._run(g[0], g[1], g[2], stream, self._function, self._metadata, None, None, None, *pointers, *self._tail)


def launch_hooks_active() -> bool:
    """Whether Triton launch hooks are set (profilers): launches must then go through Triton's own path."""
    hooks = triton.knobs.runtime
    return _hooked(hooks.launch_enter_hook) or _hooked(hooks.launch_exit_hook)


def cached_plan(factory, *key):
    """``factory(*key)`` memoised (``factory`` is an ``functools.lru_cache``) when every key is a concrete Python
    value; a SymInt key (``torch.compile`` tracing with dynamic shapes) gets a fresh plan instead, so the trace
    stays symbolic rather than failing to hash or specializing on the shape."""
    try:  # the eager path: one hash of the key (scanning it for symbols cost ~5 us per call on the H200 host)
        return factory(*key)
    except TypeError:  # a non-constant SymInt / SymFloat does not hash
        if not any(isinstance(k, (torch.SymInt, torch.SymBool, torch.SymFloat)) for k in key):
            raise
        return factory.__wrapped__(*key)


class StreamScratch:
    """Scratch memory from one kept buffer per (device, stream), grown as needed. Kernels on one stream run one
    after another, so a launch can take the buffer the previous one used: an eager launch saves a ``torch.empty``
    (3-7 us of host time on the H200 machines). Used for Triton's global scratch (device-side TMA descriptors, which
    each program writes at its start) and for the quantized Q/K/V of an eager ``lowbit_attention`` call (one
    instance each: the attention kernel's descriptors must not land on the tensors it reads). A launch being
    captured into a CUDA graph gets an allocation of its own (the graph keeps that address), and so does one larger
    than ``MAX_KEPT`` bytes (a kept buffer stays allocated for the process: ``empty_cache`` cannot free it; at such
    sizes the GPU time dwarfs an allocation). Relies on kernels not overlapping on one stream: none of the Triton
    kernels here launches programmatically. ``per_thread``: one buffer per thread as well, for data that one launch
    writes and a later one reads (two threads on one stream may interleave their launches); Triton's scratch is
    written and read within one kernel, so threads can share it."""

    MAX_KEPT = 8 << 20  # 128 B per program and descriptor: 32k programs with two descriptors each

    def __init__(self, per_thread: bool = False) -> None:
        self._buffers: dict[tuple[int, int, int], torch.Tensor] = {}
        self._per_thread = per_thread

    def __call__(self, size: int, alignment: int, stream: int) -> torch.Tensor:
        """Triton's allocator interface (``alignment``: at most 128 bytes, which allocations always meet)."""
        if size > self.MAX_KEPT or torch._C._cuda_isCurrentStreamCapturing():
            return torch.empty(size, dtype=torch.int8, device="cuda")
        # The legacy default stream is 0 on every device.
        key = (torch._C._cuda_getDevice(), stream, threading.get_ident() if self._per_thread else 0)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < size:  # a replaced buffer is freed in stream order, like any temporary
            buf = self._buffers[key] = torch.empty(size, dtype=torch.int8, device="cuda")
        return buf

    def current(self, size: int) -> torch.Tensor:
        """Scratch of ``size`` bytes for launches on the current device's current stream."""
        return self(size, 16, torch._C._cuda_getCurrentRawStream(torch._C._cuda_getDevice()))


def ensure_triton_allocator() -> None:
    """Give Triton an allocator for kernels that need global scratch (device-side TMA descriptors) if none is set:
    torch's caching allocator through :class:`StreamScratch`, on the current stream's device. An allocator the user
    set is left alone; compiled graphs set their own (Inductor's generated code)."""
    from triton.runtime import _allocation

    if _allocation._allocator.get() is _allocation._NULL_ALLOCATOR:
        triton.set_allocator(StreamScratch())


def tma_base_aligned(*tensors: torch.Tensor) -> bool:
    """16-byte aligned data pointers (TMA's requirement); a traced (fake) tensor has no address: its storage offset
    decides (allocations are 16-byte aligned)."""
    for t in tensors:
        base = t.data_ptr() if type(t) is torch.Tensor else t.storage_offset() * t.element_size()
        if base % 16:
            return False
    return True


def tma_strides_ok(strides: tuple, unit: int, element_size: int) -> bool:
    """Whether TMA can walk a tensor of these strides with dim ``unit`` as the contiguous one: that stride is 1 and
    every other is a multiple of 16 bytes (the base address is checked per call: :func:`tma_base_aligned`)."""
    return strides[unit] == 1 and all(st * element_size % 16 == 0 for i, st in enumerate(strides) if i != unit)


def _hooked(hook) -> bool:
    # None, or a HookChain whose list of calls may be empty (Triton 3.6+).
    return hook is not None and bool(getattr(hook, "calls", True))


def split_k_blocks(k_blocks: int, tiles: int, split_k: int, programs_per_sm: int, sms: int) -> tuple[int, int]:
    """``(splits, K blocks per split)`` for a GEMV of ``tiles`` output tiles: ``split_k`` 0 splits K until about
    ``programs_per_sm`` programs per SM are in flight, 1 never splits, ``s > 1`` splits in ``s``; at most one split
    per K block and no empty split."""
    want = max(1, programs_per_sm * sms // tiles) if split_k == 0 else split_k
    per_split = triton.cdiv(k_blocks, min(want, k_blocks))
    return triton.cdiv(k_blocks, per_split), per_split


def largest_pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two ``<= cap`` (a power of two) that divides ``n``: a K block that tiles K (and a scale
    group) exactly, so a kernel needs no K tail."""
    b = cap
    while n % b:
        b //= 2
    return b


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """``(pid_m, pid_n)`` of output tile ``pid`` in grouped order: ``GROUP_M`` consecutive programs take the row
    tiles of one column tile, so that weight tile is read from DRAM once and from L2 by the others."""
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pids_per_group = GROUP_M * num_pid_n
    first_m = (pid // pids_per_group) * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    return first_m + (pid % pids_per_group) % group_rows, (pid % pids_per_group) // group_rows


@triton.jit
def dot_acc(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr = "tf32"):
    """``acc + a @ b`` in float32. ``UPCAST`` is set only under ``TRITON_INTERPRET=1``: Triton's interpreter
    computes bf16 x bf16 ``tl.dot`` wrongly (it multiplies the raw uint16 bits); products of bf16/fp16 values are
    exact in float32, so upcasting first gives the GPU's answer."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _split_k_reduce_kernel(
    part_ptr, scale_ptr, bias_ptr, out_ptr, M, N, stride_om, SPLITS,
    POST_SCALE: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < M * N
    m = offs // N
    n = offs % N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(SPLITS):  # a fixed order: the result does not depend on scheduling (no atomics)
        acc += tl.load(part_ptr + s * M * N + offs, mask=ok, other=0.0)
    if HAS_SCALE:
        acc = acc * (tl.load(scale_ptr + n, mask=ok, other=0.0) * POST_SCALE)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_om + n, acc.to(out_ptr.dtype.element_ty), mask=ok)


_REDUCE_BLOCK = 1024


def reduce_split_k(
    partials: torch.Tensor,
    out: torch.Tensor,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    post_scale: float = 1.0,
) -> torch.Tensor:
    """``out[m, n] = (Σ_s partials[s, m, n]) · scale[n] · post_scale + bias[n]``, summed in split order.

    ``partials``: float32 ``(splits, M, N)`` contiguous; ``out``: ``(M, N)`` with unit column stride; ``scale``
    float32 ``(N,)`` or None; ``bias`` ``(N,)`` of any float dtype or None. Deterministic: no atomics."""
    splits, M, N = partials.shape
    any_ptr = partials  # a valid pointer for the operands a constexpr switch leaves unread
    launch = cached_plan(
        split_k_reduce_plan, M, N, out.stride(0), splits, post_scale, scale is not None, bias is not None
    )
    launch(
        partials, any_ptr if scale is None else scale, any_ptr if bias is None else bias, out,
        M, N, out.stride(0), splits,
    )  # fmt: skip
    return out


@functools.lru_cache(maxsize=512)
def split_k_reduce_plan(
    M: int, N: int, stride_om: int, splits: int, post_scale: float, has_scale: bool, has_bias: bool
) -> PlanLaunch:
    """:func:`reduce_split_k`'s launch for one shape key; its tensors come first (``partials, scale, bias, out``)."""
    meta = dict(POST_SCALE=post_scale, HAS_SCALE=has_scale, HAS_BIAS=has_bias, BLOCK=_REDUCE_BLOCK, num_warps=4)
    return PlanLaunch(_split_k_reduce_kernel, (triton.cdiv(M * N, _REDUCE_BLOCK),), meta, tensors=4)
