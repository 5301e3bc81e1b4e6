"""Exact W4A8 references and error bounds shared by the decode-sized kernel tests (tensor-core GEMV and dp4a GEMV)."""

import torch


def scale_range(out_dtype):
    # fp16 tops out at 65504: |dot| <= 1024 * K, so keep scale products below ~1e-1; bf16 takes nine decades.
    return (-6.0, 3.0) if out_dtype == torch.bfloat16 else (-4.0, -1.0)


def log_uniform(shape, lo, hi):
    return 10 ** (torch.rand(shape, dtype=torch.float64) * (hi - lo) + lo).float()


def random_inputs(M, N, K, group, out_dtype, bias=True):
    """Fresh random int8 x and int4 weights (both extremes present), scales spanning a log range."""
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8)
    x.view(-1)[torch.randperm(M * K)[:2]] = torch.tensor([-128, 127], dtype=torch.int8)
    q = torch.randint(-8, 8, (N, K), dtype=torch.int8)
    q.view(-1)[torch.randperm(N * K)[:2]] = torch.tensor([-8, 7], dtype=torch.int8)
    lo, hi = scale_range(out_dtype)
    xs = log_uniform((M,), lo, hi)
    ws = log_uniform((N,) if group is None else (N, K // group), lo, hi)
    b = torch.randn(N) * 100 if bias else None
    return x, xs, q, ws, b


def exact_f64(x, xs, q, ws, bias):
    """Independent definition: float64 products of integers are exact (|dot| < 2**53); scales in another order.
    Also returns the summed magnitudes (for the float32 rounding allowance)."""
    (M, K), N = x.shape, q.shape[0]
    groups = 1 if ws.dim() == 1 else ws.shape[1]
    g = K // groups
    xg, qg = x.double().reshape(M, groups, g), q.double().reshape(N, groups, g)
    dots = torch.einsum("mgk,ngk->mng", xg, qg)
    abs_dots = torch.einsum("mgk,ngk->mng", xg.abs(), qg.abs())  # sum |products|: what split-K partials round
    scales = xs.double().reshape(M, 1, 1) * ws.double().reshape(1, N, groups)
    out = (dots * scales).sum(-1)
    magnitude = (abs_dots * scales).sum(-1)
    if bias is not None:
        out = out + bias.double()
        magnitude = magnitude + bias.double().abs()
    return out, magnitude


def fp32_terms(plan, groupwise):
    """Float32 roundings the kernel may make, each at most 2**-24 of the summed magnitudes: the two scale products
    and the bias (3), the split-K sum (splits - 1); group-wise: one product and one add per K block, plus the FMA
    form's tree sum over the block (<= 8 levels)."""
    return 3 + plan.splits + (2 * plan.k_blocks + 8 if groupwise else 0)


def assert_close_to_exact(out, exact, magnitude, dtype, fp32_terms):
    """Within one ulp of ``dtype`` of the exact value plus ``fp32_terms`` float32 roundings of the magnitudes."""
    finfo = torch.finfo(dtype)
    bound = exact.abs() * finfo.eps + finfo.tiny + fp32_terms * 2.0**-24 * magnitude
    err = (out.double().cpu() - exact).abs()
    assert bool((err <= bound).all()), f"max error {float((err - bound).max()):.3g} over the bound"
