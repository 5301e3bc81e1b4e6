import math

import pytest
import torch
import torch.nn.functional as F

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.attention.lowbit_attention import quantize_attention_inputs
from lowbit_flex.testing import (
    assert_fully_written,
    assert_rel_error,
    assert_row_isolated,
    kernel_device,
    mma_key_order_source_rows,
    poison_,
    rel_error,
)

OP = torch.ops.lowbit.fp8_attention


def _inputs(B, H, Hkv, Lq, Lk, D, outliers=False):
    q, k, v = torch.randn(B, H, Lq, D), torch.randn(B, Hkv, Lk, D), torch.randn(B, Hkv, Lk, D)
    if outliers:  # a few channels of K with a large per-channel offset (the case smooth-K is for)
        ch = [1, D // 3, D - 2]
        k[..., ch] = k[..., ch] * 4 + 30 * torch.sign(torch.randn(B, Hkv, 1, len(ch)))
    return q, k, v


def _attention_f64(q, k, v, causal):
    g = q.shape[1] // k.shape[1]
    k64, v64 = k.double().repeat_interleave(g, 1), v.double().repeat_interleave(g, 1)
    return F.scaled_dot_product_attention(q.double(), k64, v64, is_causal=causal)


def _naive_format_f64(q8, k8, v8, qs, ks, vs, causal, pv_fp16_accum):
    """The format written out per query row, independently of the op's vectorised reference: the same block loop,
    running max, P rounding to e4m3 (scaled by 448, or 1 with fp16 accumulation) or, with a 16-bit v (``vs`` None),
    to v's dtype, and row sum of unrounded P."""
    B, H, Lq, D = q8.shape
    g = H // k8.shape[1]
    out = torch.empty(B, H, Lq, D, dtype=torch.float64)
    pv16 = vs is None
    ps = 1.0 if pv_fp16_accum or pv16 else 448.0
    for b in range(B):
        for h in range(H):
            hk = h // g
            kk = torch.stack([k8[b, hk, j].double() * ks[b, hk, j // 128] for j in range(k8.shape[2])])
            vv = v8[b, hk].double()
            for i in range(Lq):
                s = (kk @ (q8[b, h, i].double() * qs[b, h, i // 128])) / math.sqrt(D)
                n = i + 1 if causal else s.numel()
                m, row_sum, acc = -math.inf, 0.0, torch.zeros(D, dtype=torch.float64)
                if not pv16 and vs.dim() == 3:  # per-block v scales: acc in units of the head's largest
                    vs_max = vs[b, hk].max()
                    vs_unit = torch.tensor(ps, dtype=torch.float32) * (1.0 / vs_max)
                for n0 in range(0, n, 128):
                    sb = s[n0:n]
                    sb = sb[: min(128, sb.numel())]
                    m_new = max(m, sb.max().item())
                    alpha = math.exp(m - m_new)
                    p = torch.exp(sb - m_new)
                    row_sum = row_sum * alpha + p.sum().item()
                    p_mult = torch.tensor(ps, dtype=torch.float32)
                    if not pv16 and vs.dim() == 3:  # a block's v scale enters through P
                        p_mult = vs[b, hk, n0 // 128] * vs_unit
                    p_low = p.float().to(v8.dtype) if pv16 else (p.float() * p_mult).to(torch.float8_e4m3fn)
                    pv = p_low.double() @ vv[n0 : n0 + sb.numel()]
                    acc = acc * alpha + (pv.half().double() if pv_fp16_accum else pv)
                    m = m_new
                vsc = 1.0 if pv16 else vs if vs.dim() == 0 else vs_max.double() if vs.dim() == 3 else vs[b, hk]
                out[b, h, i] = acc / (row_sum * ps) * vsc
    return out


@pytest.mark.parametrize("dtype, causal, pv16, pv", [
    ("fp8", False, False, "fp8"), ("fp8", True, False, "fp8"), ("int8", True, False, "fp8"),
    ("int8", False, True, "fp8"), ("int8", True, False, "fp16"), ("fp8", False, False, "fp16"),
])  # fmt: skip
@pytest.mark.parametrize("in_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("v_scales", ["head", "block"])
def test_reference_is_the_format(dtype, causal, pv16, pv, in_dtype, v_scales):
    q, k, v = (t.to(in_dtype) for t in _inputs(1, 2, 1, 140, 300, 64))
    v = v * torch.linspace(0.01, 3, 300)[:, None].to(in_dtype)  # per-block v scales that grow and shrink
    v[:, :, 150:] *= 0.1
    args = quantize_attention_inputs(q, k, v, dtype, pv=pv)
    if v_scales == "block" and pv == "fp8":
        v8, vs = torch.ops.lowbit.quantize_fp8(v, "block", 128)
        args = (*args[:2], v8, *args[3:5], vs)
    assert args[2].dtype == (in_dtype if pv == "fp16" else torch.float8_e4m3fn)
    out = OP(*args, causal, None, torch.float32, pv16)
    naive = _naive_format_f64(*args, causal, pv16)
    assert_rel_error(out, naive, 1e-6)  # float32 output rounding; any indexing or scale slip is far larger


# Measured format accuracy vs float64 attention on the unquantized inputs (docs/fp8_attention.md). The issue's
# targets are 3e-2 (randn) and 5e-2 (outliers); e4m3's 3 mantissa bits in P and V alone give ~3.4e-2 on randn,
# so only int8-QKᵀ with outliers meets its target; the bounds below are the measured values plus a margin.
@pytest.mark.parametrize("dtype, outliers, tol", [
    ("fp8", False, 6.5e-2), ("int8", False, 4.5e-2), ("fp8", True, 8e-2), ("int8", True, 5e-2),
])  # fmt: skip
@pytest.mark.parametrize("causal", [False, True])
def test_accuracy_vs_float64(dtype, outliers, tol, causal):
    q, k, v = _inputs(1, 2, 2, 512, 512, 128, outliers)
    ref = _attention_f64(q, k, v, causal)
    out = OP(*quantize_attention_inputs(q, k, v, dtype), causal, None, torch.float32, False)
    assert_rel_error(out, ref, tol)


# Issue 12's targets, on bf16 inputs (float64 attention on the same bf16 values), with its outlier model: a per-head
# offset of 8·randn per channel of K. Targets: accurate mode (int8 QKᵀ, P and V in 16 bits) <= 1.5e-2 (2e-2 with
# outliers), fp8 <= 5e-2. Measured on this shape (docs/fp8_attention.md): int8/fp16 1.1-1.3e-2, fp8/fp16 3.2-3.8e-2
# (fp8 QKᵀ dominates), fp8/fp8 4.5-5.2e-2 (the non-causal case misses 5e-2); bounds are those plus a margin.
@pytest.mark.parametrize("qk, pv, tol, tol_outliers", [
    ("int8", "fp16", 1.5e-2, 2e-2), ("fp8", "fp16", 4.5e-2, 4.5e-2), ("fp8", "fp8", 6e-2, 6e-2),
])  # fmt: skip
@pytest.mark.parametrize("outliers", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_issue_12_accuracy_targets(qk, pv, tol, tol_outliers, outliers, causal):
    q, k, v = _inputs(1, 4, 2, 512, 512, 128)
    if outliers:
        k = k + 8 * torch.randn(1, 2, 1, 128)
    q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
    out = OP(*quantize_attention_inputs(q, k, v, qk, pv=pv), causal, None, torch.float32)
    assert_rel_error(out, _attention_f64(q, k, v, causal), tol_outliers if outliers else tol)


def test_smooth_k_is_what_rescues_outliers():
    q, k, v = _inputs(1, 2, 2, 256, 256, 64, outliers=True)
    ref = _attention_f64(q, k, v, False)
    errs = {sm: rel_error(OP(*quantize_attention_inputs(q, k, v, "int8", smooth_k=sm)), ref) for sm in (False, True)}
    assert errs[True] < 0.6 * errs[False], errs


def _valid_args(Lq=130, Lk=130, D=64, H=2, Hkv=1):
    q, k, v = _inputs(1, H, Hkv, Lq, Lk, D)
    return list(quantize_attention_inputs(q, k, v, "fp8"))


@pytest.mark.parametrize("index, bad, exc, match", [
    (0, lambda a: a[0].float(), TypeError, "q: expected dtype"),
    (1, lambda a: a[1].view(torch.int8), TypeError, "k: expected dtype float8_e4m3fn"),
    (2, lambda a: a[2].view(torch.int8), TypeError, "v: expected dtype"),
    (1, lambda a: a[1].expand(1, 3, 130, 64), ValueError, "k: expected shape"),
    (2, lambda a: a[2][:, :, :100], ValueError, "v: expected shape"),
    (3, lambda a: a[3][:, :, :1].contiguous(), ValueError, "q_scale: expected shape"),
    (4, lambda a: torch.ones(1, 2, 2), ValueError, "k_scale: expected shape"),
    (5, lambda a: torch.ones(3), ValueError, "v_scale: expected shape"),
    (5, lambda a: a[5].double(), TypeError, "v_scale: expected dtype"),
    (5, lambda a: None, ValueError, "v_scale: expected a float32 scale for an fp8 v"),
    (2, lambda a: a[2].bfloat16(), ValueError, "v_scale: expected None with a torch.bfloat16 v"),
    (2, lambda a: a[2].float(), TypeError, "v: expected dtype float8_e4m3fn or bfloat16 or float16"),
])  # fmt: skip
def test_bad_input_eager_and_fake(index, bad, exc, match):
    args = _valid_args()
    args[index] = bad(args)
    _raises_eager_and_fake(args, {}, exc, match)


def _raises_eager_and_fake(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        OP(*args, **kwargs)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
        OP(*[None if a is None else mode.from_tensor(a) for a in args], **kwargs)


def test_pv_fp16_accum_needs_an_fp8_v():
    args = _valid_args()
    args[2], args[5] = args[2].half(), None
    _raises_eager_and_fake(args, {"pv_fp16_accum": True}, ValueError, "pv_fp16_accum: only for an fp8 v")


def test_bad_head_dim_and_options_eager_and_fake():
    args = _valid_args(D=96)
    cases = [(args, {}, ValueError, "head dim 96 is not supported"),
             (_valid_args(), {"out_dtype": torch.int8}, TypeError, "out_dtype"),
             (_valid_args(), {"sm_scale": -1.0}, ValueError, "sm_scale")]  # fmt: skip
    for a, kw, exc, match in cases:
        with pytest.raises(exc, match=match):
            OP(*a, **kw)
        with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
            OP(*[mode.from_tensor(t) for t in a], **kw)


def test_body_rejects_what_the_schema_would():
    """Eager calls skip the dispatcher's schema checks (``fp8_attention_eager``): the body's own checks reject a
    tensor flag or scale, which would otherwise reach the kernel as a constexpr or a pointer."""
    from lowbit_flex.ops.fp8_attention import _fp8_attention

    args = _valid_args()
    with pytest.raises(TypeError, match="causal: expected a bool, got Tensor"):
        _fp8_attention(*args, torch.tensor(True), None, torch.bfloat16, False)
    with pytest.raises(TypeError, match="sm_scale: expected a float or None, got Tensor"):
        _fp8_attention(*args, False, torch.tensor(0.1), torch.bfloat16, False)


def test_reference_op_takes_out_dtype_by_name_eager_and_fake():
    # The opaque op (GPUs without fp8 MMA) takes the dtype's name, which an AOTInductor package passes intact.
    args = _valid_args()
    ref = torch.ops.lowbit._fp8_attention_reference
    out = ref(*args[:6], False, None, "float16", False)
    assert out.dtype == torch.float16 and torch.equal(out, OP(*args, out_dtype=torch.float16))
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = [mode.from_tensor(a) for a in args[:6]]
        assert ref(*fake, False, None, "bfloat16", False).dtype == torch.bfloat16
        with pytest.raises(ValueError, match="^out_dtype: expected 'bfloat16' or 'float16' or 'float32', got 'int8'"):
            ref(*fake, False, None, "int8", False)
    with pytest.raises(ValueError, match="^out_dtype: expected"):
        ref(*args[:6], False, None, "int8", False)


needs_kernel = pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")


_F32, _BF16, _F16 = torch.float32, torch.bfloat16, torch.float16


@needs_kernel
@pytest.mark.parametrize("B, H, Hkv, Lq, Lk, D, causal, dtype, pv16, pv, in_dtype", [
    (1, 2, 1, 130, 200, 64, False, "fp8", False, "fp8", _F32),    # GQA, ragged L, Lq != Lk
    (1, 2, 2, 200, 150, 64, True, "fp8", False, "fp8", _F32),     # causal with Lq > Lk
    (1, 2, 1, 70, 260, 128, True, "int8", False, "fp8", _F32),    # int8 QKᵀ, D = 128, short queries
    (2, 1, 1, 129, 129, 64, False, "fp8", True, "fp8", _F32),     # fp16 PV accumulation
    (1, 2, 1, 130, 200, 128, True, "int8", False, "fp16", _BF16),  # the accurate mode: GQA, causal, ragged
    (1, 2, 1, 130, 200, 64, False, "int8", False, "fp16", _F16),   # ... with an fp16 v
    (1, 2, 2, 70, 140, 64, True, "fp8", False, "fp16", _BF16),    # fp8 QKᵀ, 16-bit PV, short queries
])  # fmt: skip
def test_triton_kernel_matches_reference(B, H, Hkv, Lq, Lk, D, causal, dtype, pv16, pv, in_dtype, monkeypatch):
    from lowbit_flex.kernels import fp8_attention as mod

    dev = kernel_device()
    q, k, v = (t.to(in_dtype) for t in _inputs(B, H, Hkv, Lq, Lk, D))
    args = quantize_attention_inputs(q, k, v, dtype, pv=pv)
    ref = OP(*args, causal, None, torch.float32, pv16)
    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))
    out = mod.fp8_attention_triton(*(_to(a, dev) for a in args), causal, None, torch.float32, pv16)
    assert_fully_written(out, "out")
    # Up to float32 vs float64 arithmetic: an occasional P element sits at an e4m3 rounding boundary and rounds the
    # other way (one weight off by 2**-3 of itself). Under the interpreter that is rare: usually ~1e-7 in norm, but a
    # CI run of 2026-12-02 drew inputs where one large weight flipped, 2.0e-3. On the GPU, exp2 is the hardware
    # approximation and the MMA sums in its own order, so more P elements flip: measured 1.6e-3 to 3.2e-3 on an H200.
    # A wrong scale, mask or block index gives errors above 1e-2.
    # P cast to a 16-bit v's dtype has the same kind of boundary cases, 2**-8 (bf16) of one weight.
    assert_rel_error(out, ref, 5e-3)


def _to(t, dev):
    return None if t is None else t.to(dev)


@needs_kernel
def test_triton_kernel_transposed_v_and_bf16_out():
    from lowbit_flex.kernels.fp8_attention import fp8_attention_triton

    q, k, v = _inputs(1, 2, 2, 140, 140, 64)
    q8, k8, v8, qs, ks, vs = quantize_attention_inputs(q, k, v, "fp8")
    v8t = v8.transpose(-1, -2).contiguous().transpose(-1, -2)  # the layout lowbit_attention uses on the GPU
    dev = kernel_device()
    out = fp8_attention_triton(*(a.to(dev) for a in (q8, k8, v8t, qs, ks, vs)), True, 0.2, torch.bfloat16, False)
    ref = OP(q8, k8, v8, qs, ks, vs, True, 0.2, torch.float32)
    assert out.dtype == torch.bfloat16
    # bf16 output rounding (~1e-3) plus P's e4m3 rounding flips, which on the GPU (hardware exp2) measured up to
    # 3.2e-3 in test_triton_kernel_matches_reference; with rows this short one flip is a larger share of the norm:
    # 4.8e-3 in H200 run 44. A wrong scale, mask or block index is above 1e-2.
    assert_rel_error(out, ref, 8e-3)


def mma_key_order(v8: torch.Tensor) -> torch.Tensor:
    """v8 ``(B, Hkv, Lk, D)`` as ``quantize_qkv_triton(..., v_mma_key_order=True)`` writes it, built from the
    layout's definition (:func:`~lowbit_flex.testing.mma_key_order_source_rows`), token-major."""
    B, Hkv, Lk, D = v8.shape
    src = mma_key_order_source_rows(Lk)
    padded = torch.zeros(B, Hkv, len(src), D, dtype=torch.uint8)
    padded[:, :, :Lk] = v8.view(torch.uint8)
    return padded[:, :, src].view(v8.dtype).transpose(-1, -2).contiguous().transpose(-1, -2)


@needs_kernel
@pytest.mark.parametrize("B, H, Hkv, Lq, Lk, D, causal, qk, pv16", [
    (1, 2, 1, 130, 200, 64, False, "fp8", False),   # GQA, a ragged last group of 16 keys (200 = 12 * 16 + 8)
    (1, 2, 2, 200, 150, 128, True, "int8", False),  # causal with Lq > Lk, int8 QKᵀ
    (2, 1, 1, 129, 90, 64, False, "fp8", True),     # one partial key block, fp16 PV accumulation
])  # fmt: skip
def test_triton_kernel_reads_v_in_mma_key_order(B, H, Hkv, Lq, Lk, D, causal, qk, pv16, monkeypatch):
    # The same P·V sum with the keys of v (and so of P's columns) permuted within each 16: equal up to the MMA's
    # float32 summation order, and the reference's format.
    from lowbit_flex.kernels import fp8_attention as mod
    from lowbit_flex.ops.lowbit_attention import quantize_v_blocks

    dev = kernel_device()
    q, k, v = _inputs(B, H, Hkv, Lq, Lk, D)
    q8, k8, _, qs, ks, _ = quantize_attention_inputs(q, k, v, qk)
    v8, vs = quantize_v_blocks(v)  # a scale per 128 keys, as lowbit_attention's pass writes
    v_mma = mma_key_order(v8)
    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))
    args = [_to(a, dev) for a in (q8, k8, v_mma, qs, ks, vs)]
    out = mod.fp8_attention_triton(*args, causal, None, torch.float32, pv16, v_mma_key_order=True)
    assert_fully_written(out, "out")
    args[2] = _to(v8, dev)
    natural = mod.fp8_attention_triton(*args, causal, None, torch.float32, pv16)
    assert_rel_error(out, natural, 1e-6)
    assert_rel_error(out, OP(q8, k8, v8, qs, ks, vs, causal, None, torch.float32, pv16), 5e-3)


@needs_kernel
@pytest.mark.parametrize("config", range(3))  # OCCUPANCY_CONFIGS
@pytest.mark.parametrize("B, H, Hkv, Lq, Lk, D, causal, qk, pv", [
    (1, 2, 1, 130, 200, 64, True, "fp8", "fp8"),     # GQA, causal, ragged: v in the MMA's key order, block scales
    (1, 2, 2, 70, 150, 128, False, "int8", "fp16"),  # the accurate mode, a partial last step
])  # fmt: skip
def test_occupancy_configs_match_the_reference_of_their_step(B, H, Hkv, Lq, Lk, D, causal, qk, pv, config,
                                                             monkeypatch):  # fmt: skip
    # 64-key steps round P against the running max of each 64 keys: the reference with that step is their format
    # (and the 128-key one is not: rows whose max moves into a block's second half round P differently).
    from lowbit_flex.kernels import fp8_attention as mod
    from lowbit_flex.ops.fp8_attention import reference_fp8_attention
    from lowbit_flex.ops.lowbit_attention import quantize_v_blocks

    cfg = mod.OCCUPANCY_CONFIGS[config]
    dev = kernel_device()
    q, k, v = _inputs(B, H, Hkv, Lq, Lk, D)
    q8, k8, v8, qs, ks, vs = quantize_attention_inputs(q, k, v, qk, pv=pv)
    mma = pv == "fp8"
    if mma:  # per-block v scales and v in the MMA's key order, as lowbit_attention's pass writes them
        v8, vs = quantize_v_blocks(v)
    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))
    args = [_to(a, dev) for a in (q8, k8, mma_key_order(v8) if mma else v8, qs, ks, vs)]
    out = mod.fp8_attention_triton(*args, causal, None, torch.float32, False, config=cfg, v_mma_key_order=mma)
    assert_fully_written(out, "out")
    ref = reference_fp8_attention(q8, k8, v8, qs, ks, vs, causal, None, torch.float32, False, cfg.block_n)
    assert_rel_error(out, ref, 5e-3)  # as test_triton_kernel_matches_reference
    # the step's format is as accurate as the 128-key one, against float64 attention on the unquantized inputs
    exact = _attention_f64(q, k, v, causal)
    assert rel_error(out.cpu(), exact) < 1.1 * rel_error(OP(q8, k8, v8, qs, ks, vs, causal, None, torch.float32), exact)


def test_bad_launch_configs_are_rejected():
    from lowbit_flex.kernels import fp8_attention as mod

    args = quantize_attention_inputs(*_inputs(1, 2, 1, 130, 130, 64), "fp8")
    for cfg in (mod.AttentionConfig(96, 128, 0, 4, 3), mod.AttentionConfig(64, 32, 0, 4, 3),
                mod.AttentionConfig(128, 64, 0, 4, 3, tma=True, gluon=True)):  # fmt: skip
        with pytest.raises(ValueError, match="config: block_m must divide 128"):
            mod.attention_plan(*args, False, None, False, cfg)


@needs_kernel
@pytest.mark.parametrize("Lq, Lk", [(300, 300), (256, 256), (200, 330)])  # odd and even tile counts, Lq < Lk
def test_causal_pairs_compute_what_one_tile_per_program_does(Lq, Lk):
    """A paired causal launch (each program: tiles n - 1 - i and i, the middle one alone) writes every output row,
    with the same bits as one tile per program (the same arithmetic per tile, in another program)."""
    import triton

    from lowbit_flex.kernels import fp8_attention as mod

    dev = kernel_device()
    args = [_to(a, dev) for a in quantize_attention_inputs(*_inputs(1, 2, 1, Lq, Lk, 64), "fp8")]
    args[2] = args[2].transpose(-1, -2).contiguous().transpose(-1, -2)  # token-major v, as the pass writes it
    launch, scalars = mod.attention_plan(*args, True, None, False)
    assert launch.meta["CAUSAL_PAIRS"] and launch.grid[0] == triton.cdiv(triton.cdiv(Lq, launch.meta["BLOCK_M"]), 2)
    outs = []
    for pairs in (True, False):
        meta = dict(launch.meta, CAUSAL_PAIRS=pairs, LONGEST_FIRST=not pairs)
        grid = (triton.cdiv(Lq, meta["BLOCK_M"]) if not pairs else launch.grid[0], launch.grid[1])
        out = poison_(torch.empty(args[0].shape, dtype=torch.float32, device=dev))
        mod._fp8_attention_fwd[grid](*args, out, *scalars, **meta)
        assert_fully_written(out, "out")
        outs.append(out)
    assert torch.equal(outs[0], outs[1])


def test_causal_pairs_rule():
    """Pairs only where run 73 measured them faster: causal, fp8 QKᵀ, an e4m3 V, at most 1024 queries, and a tile
    without a register cap."""
    from lowbit_flex.kernels.fp8_attention import CAUSAL_PAIRS_MAX_LQ, _causal_pairs

    assert CAUSAL_PAIRS_MAX_LQ == 1024
    assert _causal_pairs(1024, True, False, False, False) and _causal_pairs(1, True, False, False, False)
    assert not _causal_pairs(1025, True, False, False, False)
    assert not _causal_pairs(1024, False, False, False, False)  # no mask: every tile does the same work
    assert not _causal_pairs(1024, True, True, False, False)  # a 16-bit V
    assert not _causal_pairs(1024, True, False, True, False)  # int8 QKᵀ: its tile has three programs per SM
    assert not _causal_pairs(1024, True, False, False, True)  # a register cap: the pairs' loop would spill


def test_mma_key_order_is_only_for_an_e4m3_v():
    from lowbit_flex.kernels.fp8_attention import attention_plan

    q8, k8, _, qs, ks, _ = quantize_attention_inputs(*_inputs(1, 2, 1, 130, 130, 64), "int8")
    with pytest.raises(ValueError, match="v_mma_key_order"):
        attention_plan(q8, k8, torch.randn(1, 1, 130, 64).bfloat16(), qs, ks, None, False, None, False, None, True)


def test_gluon_configs_and_the_rule(monkeypatch):
    """The GPU tests below take GLUON_CONFIGS by index; the rule keeps run 44's pick for a 16-bit V (4 ring slots),
    and run 51's for an e4m3 V: the capped 2-stage tile with int8 QKᵀ, the 128-query tile for fp8 QKᵀ without a
    mask, the 3-stage 64-query tile otherwise and wherever at most 64 queries would leave a 128-row tile half
    empty."""
    from lowbit_flex.kernels import fp8_attention as mod

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    assert [c.num_stages for c in mod.GLUON_CONFIGS] == [2, 3, 4]
    tile = lambda m, stages, **kw: mod.AttentionConfig(m, mod.K_BLOCK, 0, 4, stages, tma=True, **kw)
    for causal in (False, True):
        for qk_int8 in (False, True):
            assert mod.pick_config(4096, True, qk_int8, causal) == tile(128, 4, gluon=True)
            assert mod.pick_config(64, True, qk_int8, causal) == tile(64, 3)
        assert mod.pick_config(4096, False, True, causal) == tile(64, 2, maxnreg=168)
        assert mod.pick_config(64, False, True, causal) == tile(64, 2, maxnreg=168)
    assert mod.pick_config(4096, False, False, False) == tile(128, 3)
    assert mod.pick_config(65, False, False, False) == tile(128, 3)
    assert mod.pick_config(64, False, False, False) == tile(64, 3)
    assert mod.pick_config(4096, False, False, True) == tile(64, 3)


@pytest.mark.parametrize("qk_int8, causal", [(False, False), (False, True), (True, False), (True, True)])
def test_a_gluon_config_falls_back_to_the_triton_rule_tile(monkeypatch, qk_int8, causal):
    """Where an explicit Gluon config cannot run (traced calls take its plan's ``traced``), an e4m3 V takes the rule's
    Triton tile for its QKᵀ format and mask, on that tile's grid; a 16-bit V the 8-warp 128-query tile."""
    from lowbit_flex.kernels import fp8_attention as mod

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(mod.torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    inputs = _inputs(1, 2, 2, 256, 256, 128)
    q8, k8, v8, qs, ks, vs = quantize_attention_inputs(*inputs, "int8" if qk_int8 else "fp8")
    v8 = v8.transpose(-1, -2).contiguous().transpose(-1, -2)  # token-major, as the pass writes it
    mod._launch_plan.cache_clear()
    try:
        fp8_v, _ = mod.attention_plan(q8, k8, v8, qs, ks, vs, causal, None, False, mod.GLUON_CONFIGS[1], True)
        pv16, _ = mod.attention_plan(q8, k8, inputs[2].bfloat16(), qs, ks, None, causal, None, False,
                                     mod.GLUON_CONFIGS[1])  # fmt: skip
    finally:
        mod._launch_plan.cache_clear()
    tile = mod._E4M3_PV_RULE[qk_int8, causal]
    for plan, triton_tile in ((fp8_v, tile), (pv16, mod.GLUON_FALLBACK)):
        assert plan.kernel.fn.__name__ == "_fp8_attention_fwd_sm90_ws"
        assert plan.grid[0] == 2 and plan.meta["STAGES"] == mod.GLUON_CONFIGS[1].num_stages
        fallback = plan.traced
        tiles = 256 // triton_tile.block_m
        pairs = causal and not qk_int8 and plan is fp8_v  # the causal fp8-QKᵀ e4m3-V tile up to 1024 queries
        assert fallback.kernel.fn.__name__ == "_fp8_attention_fwd"
        assert fallback.grid[0] == ((tiles + 1) // 2 if pairs else tiles)
        picked = (fallback.meta["BLOCK_M"], fallback.meta["BLOCK_N"], fallback.meta["num_warps"])
        assert picked == (triton_tile.block_m, triton_tile.block_n, triton_tile.num_warps)
        assert fallback.meta.get("maxnreg") == (None if plan is pv16 else triton_tile.maxnreg)
        # causal: each head's longest query tiles first, or (the Triton tile, paired) no order needed
        assert plan.meta["LONGEST_FIRST"] is causal and fallback.meta["CAUSAL_PAIRS"] is pairs
        assert fallback.meta["LONGEST_FIRST"] is (causal and not pairs)


def test_a_capped_rule_tile_traces_as_the_uncapped_3_stage_tile(monkeypatch):
    """torch.compile cannot pass a register cap: a traced call of the int8-QKᵀ rule runs its tile with 3 stages (the
    old rule's config, timed), never the uncapped 2-stage one."""
    from lowbit_flex.kernels import fp8_attention as mod

    monkeypatch.setattr(mod, "triton_interpreting", lambda: False)
    monkeypatch.setattr(mod, "_tma_layout", lambda *a: 2)
    mod._launch_plan.cache_clear()
    try:
        plan = mod._launch_plan(1, 2, 256, 128, False, False, True, False, True, True, True, True, 1, None,
                                *range(1, 31))  # fmt: skip
    finally:
        mod._launch_plan.cache_clear()
    assert plan.meta["maxnreg"] == 168 and plan.meta["num_stages"] == 2
    assert "maxnreg" not in plan.traced.meta and plan.traced.meta["num_stages"] == 3
    assert {k: v for k, v in plan.traced.meta.items() if k != "num_stages"} == {
        k: v for k, v in plan.meta.items() if k not in ("num_stages", "maxnreg")
    }


needs_sm90 = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0), reason="the Gluon kernel: sm_90"
)


@needs_sm90
@pytest.mark.parametrize("config", range(3))  # GLUON_CONFIGS: 2, 3 and 4 ring slots
@pytest.mark.parametrize("B, H, Hkv, Lq, Lk, D, causal, qk, pv", [
    (1, 4, 2, 300, 300, 128, False, "fp8", "fp8"),    # GQA, ragged last block
    (1, 4, 2, 300, 300, 128, True, "int8", "fp16"),   # the accurate mode, causal
    (2, 2, 2, 200, 700, 64, True, "fp8", "fp8"),      # causal with Lq < Lk, D = 64
    (1, 2, 1, 700, 200, 64, False, "int8", "fp8"),    # Lq > Lk, int8 QKᵀ
    (1, 2, 2, 1000, 1000, 128, True, "fp8", "fp16"),  # many key blocks: every ring slot reused several times
    (1, 2, 2, 100, 60, 128, False, "fp8", "fp8"),     # one key block, shorter than a tile
])  # fmt: skip
def test_gluon_sm90_kernel_matches_triton_kernel(B, H, Hkv, Lq, Lk, D, causal, qk, pv, config):
    # The same arithmetic in another order (PV of block j - 1 overlapping block j's softmax): measured bit-identical
    # to the Triton kernel on the H200 (run 40); 1e-6 leaves room for an MMA summing in another order.
    from lowbit_flex.kernels import fp8_attention as mod
    from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton
    from lowbit_flex.ops.lowbit_attention import QK_FORMATS

    q, k, v = (t.cuda().bfloat16() for t in _inputs(B, H, Hkv, Lq, Lk, D))
    cfg = mod.GLUON_CONFIGS[config]
    # an e4m3 v with its keys in order (the fp8_attention op's) and in the MMA's order (lowbit_attention's)
    for mma in (False, True) if pv == "fp8" else (False,):
        q8, qs, k8, ks, v8, vs = quantize_qkv_triton(q, k, v, QK_FORMATS[qk], True, pv == "fp8", mma)
        args = (q8, k8, v8, qs, ks, vs) if pv == "fp8" else (q8, k8, v, qs, ks, None)
        launch, scalars = mod.attention_plan(*args, causal, None, False, cfg, mma)
        assert launch.kernel.fn.__name__ == "_fp8_attention_fwd_sm90_ws"
        out = poison_(torch.empty(q.shape, dtype=torch.float32, device="cuda"))
        launch(*args[:5], ks if args[5] is None else args[5], out, *scalars)
        assert_fully_written(out, "out")
        triton_out = mod.fp8_attention_triton(
            *args, causal, None, torch.float32, False, config=mod.CONFIGS[0], v_mma_key_order=mma
        )
        assert_rel_error(out, triton_out, 1e-6)
        if mma:  # the reference reads v in its keys' order
            args = (q8, k8, quantize_qkv_triton(q, k, v, QK_FORMATS[qk], True, True)[4], qs, ks, vs)
        ref = OP(*(None if a is None else a.cpu() for a in args), causal, None, torch.float32, False)
        # float32 vs float64, as test_triton_kernel_matches_reference, but with rows as short as 60 keys one flipped
        # P weight is a larger share of the norm: 5.4e-3 for both kernels on the H200 (run 41). A wrong scale, mask
        # or block index is above 1e-2.
        assert_rel_error(out, ref, 8e-3)


@needs_sm90
@pytest.mark.parametrize("mma", [False, True])
def test_gluon_sm90_kernel_keeps_a_nan_query_in_its_row(mma):
    from lowbit_flex.kernels import fp8_attention as mod
    from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton

    q, k, v = (t.cuda().bfloat16() for t in _inputs(1, 2, 2, 300, 300, 128))

    def run(qq):
        q8, qs, k8, ks, v8, vs = quantize_qkv_triton(qq, k, v, torch.float8_e4m3fn, True, True, mma)
        return mod.fp8_attention_triton(q8, k8, v8, qs, ks, vs, False, None, torch.float32, False,
                                        config=mod.GLUON_CONFIGS[1], v_mma_key_order=mma).cpu()  # fmt: skip

    row = (0, 1, 77)
    q_bad, q_clean = q.clone(), q.clone()
    q_bad[(*row, 5)], q_clean[(*row, 5)] = float("nan"), 0
    assert_row_isolated(run(q_bad), run(q_clean), row, row_nan=True)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("qk, pv", [("fp8", "fp8"), ("int8", "fp16"), ("fp8", "fp16"), ("int8", "fp8")])
@pytest.mark.parametrize("path", ["reference", pytest.param("kernel", marks=needs_kernel)])
def test_nonfinite_query_stays_in_its_row(bad, qk, pv, path, monkeypatch):
    # The block scales ignore non-finite values, so the other 127 rows of the NaN's q block quantize as if it were 0:
    # their outputs equal those of the clean input bit for bit. fp8 carries NaN / inf (as NaN) into that row's output;
    # int8 has no NaN (the value becomes 0 or +-127), so with qk="int8" that row is finite (documented).
    from lowbit_flex.kernels import fp8_attention as mod

    q, k, v = (t.bfloat16() for t in _inputs(1, 2, 1, 200, 150, 64))
    row = (0, 1, 70)
    q_bad = q.clone()
    q_bad[(*row, 9)] = bad
    q_clean = q.clone()
    q_clean[(*row, 9)] = 0

    def run(qq):
        args = quantize_attention_inputs(qq, k, v, qk, pv=pv)
        if path == "reference":
            return OP(*args, True, None, torch.float32)
        real_empty = torch.empty
        monkeypatch.setattr(mod.torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))
        return mod.fp8_attention_triton(*(_to(a, kernel_device()) for a in args), True, None, torch.float32, False)

    out, clean = run(q_bad).cpu(), run(q_clean).cpu()
    # Triton 3.9's interpreter reads e4m3fn NaN as 480: there the fp8 kernel's NaN row is not checked.
    fp8_nan_checked = path == "reference" or kernel_device() == "cuda"
    assert_row_isolated(out, clean, row, row_nan=False if qk == "int8" else True if fp8_nan_checked else None)
    others = torch.ones(out.shape[:3], dtype=torch.bool)
    others[row] = False
    ref = _attention_f64(q_clean, k, v, True)
    assert_rel_error(out[others], ref[others], 6e-2)


@pytest.mark.parametrize("where", ["k", "v"])
def test_nonfinite_key_or_value_reaches_every_query(where):
    # As in SDPA: a NaN in K enters every score of its column (every query), one in V every output that attends to
    # its token (here: all queries, in that channel).
    q, k, v = _inputs(1, 2, 1, 100, 150, 64)
    (k if where == "k" else v)[0, 0, 30, 5] = float("nan")
    out = OP(*quantize_attention_inputs(q, k, v, "fp8", smooth_k=False), False, None, torch.float32)
    bad = out.isnan() if where == "k" else out[..., 5].isnan()
    assert bool(bad.all())


def test_no_queries_give_an_empty_output_and_no_keys_an_error():
    args = _valid_args(Lq=130, Lk=130)
    q0 = torch.empty(1, 2, 0, 64, dtype=torch.float8_e4m3fn)
    out = OP(q0, *args[1:3], torch.empty(1, 2, 0), *args[4:], out_dtype=torch.float16)
    assert out.shape == (1, 2, 0, 64) and out.dtype == torch.float16
    k0, v0 = args[1][:, :, :0], args[2][:, :, :0]
    _raises_eager_and_fake([args[0], k0, v0, args[3], torch.empty(1, 1, 0), args[5]], {}, ValueError,
                           r"k: expected at least one key token \(Lk > 0\)")  # fmt: skip
