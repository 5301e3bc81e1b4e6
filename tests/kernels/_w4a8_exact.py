"""Exact W4A8 references and error bounds shared by the decode-sized kernel tests (tensor-core GEMV and dp4a GEMV)."""

import torch

from lowbit_flex.testing import w4a8_exact_f64 as exact_f64


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


def fp32_terms(plan, groupwise):
    """Float32 roundings the kernel may make, each at most 2**-24 of the summed magnitudes: the two scale products
    and the bias (3), the split-K sum (splits - 1); group-wise: one product and one add per K block, plus the dp4a
    GEMV's tree sum over a step's words (<= 8 levels)."""
    return 3 + plan.splits + (2 * plan.k_blocks + 8 if groupwise else 0)


def assert_close_to_exact(out, exact, magnitude, dtype, fp32_terms):
    """Within one ulp of ``dtype`` of the exact value plus ``fp32_terms`` float32 roundings of the magnitudes."""
    finfo = torch.finfo(dtype)
    bound = exact.abs() * finfo.eps + finfo.tiny + fp32_terms * 2.0**-24 * magnitude
    err = (out.double().cpu() - exact).abs()
    assert bool((err <= bound).all()), f"max error {float((err - bound).max()):.3g} over the bound"


class KernelRunner:
    """Runs one decode-sized W4A8 kernel module (``s8s4_decode`` or ``s8s4_gemv``: a ``launcher`` with the shared
    signature and a cached ``_plan``) on ``device`` into poisoned outputs, with the checks both test files share."""

    def __init__(self, mod, launcher, device):
        self.mod, self.launcher, self.device = mod, launcher, device

    def run(self, x, xs, q, ws, b, out_dtype, config):
        """Launch into a poisoned output; check every element was written. Returns (out on CPU, plan)."""
        from lowbit_flex.quant import pack_int4
        from lowbit_flex.testing import assert_fully_written, poison_

        dev = lambda t: None if t is None else t.to(self.device)
        M, N = x.shape[0], q.shape[0]
        out = poison_(torch.empty((M, N), dtype=out_dtype, device=self.device))
        res = self.launcher(dev(x), dev(xs), pack_int4(q).to(self.device), dev(ws), dev(b), out_dtype, config, out=out)
        assert res is out and out.shape == (M, N) and out.dtype == out_dtype
        assert_fully_written(out)
        groups = 1 if ws.dim() == 1 else ws.shape[1]
        device = torch.device(self.device)
        plan = self.mod._plan(device, M, N, x.shape[1], groups, x.dtype, out_dtype, b is not None, config)
        return out.cpu(), plan

    def check(self, M, N, K, group, bias, out_dtype, config):
        """Fresh random int8 inputs against the exact definition; returns the plan."""
        x, xs, q, ws, b = random_inputs(M, N, K, group, out_dtype, bias)
        out, plan = self.run(x, xs, q, ws, b, out_dtype, config)
        exact, magnitude = exact_f64(x, xs, q, ws, b)
        assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms(plan, group is not None))
        return plan

    def check_fused_quantization(self, x_dtype, M, N, K, group, config):
        """Float x quantized in the kernel: bit-identical to the same kernel on ``lowbit::quantize_int8_rowwise``'s
        int8 values, and within bounds of the exact definition."""
        out_dtype = torch.bfloat16
        _, _, q, ws, b = random_inputs(M, N, K, group, out_dtype)
        xf = (torch.randn(M, K) * log_uniform((M, 1), -2.0, 2.0)).to(x_dtype)
        xf[0, 0] = 0.0
        out, plan = self.run(xf, None, q, ws, b, out_dtype, config)
        xq, xs = torch.ops.lowbit.quantize_int8_rowwise(xf)  # CPU reference
        ref, _ = self.run(xq, xs.view(M), q, ws, b, out_dtype, config)
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
        exact, magnitude = exact_f64(xq, xs.view(M), q, ws, b)
        assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms(plan, group is not None))

    def check_fused_zero_and_nan_rows(self, K, config):
        """A zero row (scale 1.0: its output is the rounded bias) and a NaN row, whose own output may be anything
        while the other rows' must not change. float16 output: Triton's interpreter truncates float32 -> bfloat16
        (the GPU rounds to nearest even), so only fp16 makes the bias check exact everywhere."""
        M, N, out_dtype = 4, 40, torch.float16
        _, _, q, ws, b = random_inputs(M, N, K, 64, out_dtype)
        xf = torch.randn(M, K, dtype=torch.bfloat16)
        xf[1] = 0.0
        xf[2, 5] = float("nan")
        out, _ = self.run(xf, None, q, ws, b, out_dtype, config)
        clean = xf.clone()
        clean[2] = 0.0
        xq, xs = torch.ops.lowbit.quantize_int8_rowwise(clean)
        assert float(xs[1]) == 1.0
        ref, _ = self.run(xq, xs.view(M), q, ws, b, out_dtype, config)
        keep = [0, 1, 3]
        torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=0)
        torch.testing.assert_close(out[1], b.to(out_dtype), rtol=0, atol=0)
