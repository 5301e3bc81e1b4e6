"""Sample arguments for every op in the ``lowbit`` namespace, shared by the op-wide tests (``opcheck``, tracing).

Each generator takes a device and yields ``(args, kwargs)``: typical calls plus non-contiguous, expanded and empty
inputs where the op takes them (fakes must report the strides the real kernels give).
"""

import torch

from lowbit_flex._checks import dtype_name


def _quantize_int8_rowwise(device):
    yield (torch.randn(3, 40, device=device),), {}
    yield (torch.randn(2, 3, 7, device=device, dtype=torch.bfloat16),), {}
    yield (torch.randn(40, 3, device=device).t(),), {}  # non-contiguous
    yield (torch.randn(1, 40, device=device).expand(3, 40),), {}  # expanded
    yield (torch.randn(0, 5, 40, device=device),), {}  # no rows


def _fp8_weight_only_linear(device):
    w = (torch.randn(24, 40, device=device) * 50).to(torch.float8_e4m3fn)
    s = torch.rand(24, device=device) + 0.5
    yield (torch.randn(3, 40, device=device, dtype=torch.bfloat16), w, s), {}
    x = torch.randn(2, 20, 40, device=device, dtype=torch.float16)
    yield (x, w, s, torch.randn(24, device=device, dtype=torch.float16)), {}
    yield (torch.randn(40, 3, device=device, dtype=torch.bfloat16).t(), w, s), {}  # non-contiguous
    yield (torch.randn(1, 40, device=device, dtype=torch.bfloat16).expand(3, 40), w, s), {}  # expanded
    yield (torch.randn(0, 40, device=device, dtype=torch.bfloat16), w, s), {}  # no rows


def _fpx_weight_only_linear(device):
    from lowbit_flex.quant import pack_fpx_tiles

    s = torch.rand(16, device=device) + 0.5
    for bits, (e, m) in ((6, (3, 2)), (6, (2, 3)), (4, (2, 1))):
        wp = pack_fpx_tiles(torch.randint(0, 2**bits, (16, 32), dtype=torch.uint8), bits).to(device)
        yield (torch.randn(5, 32, device=device, dtype=torch.bfloat16), wp, s, e, m), {}
    b = torch.randn(16, device=device, dtype=torch.float16)
    yield (torch.randn(2, 20, 32, device=device, dtype=torch.float16), wp, s, 2, 1, b), {}
    yield (torch.randn(32, 5, device=device, dtype=torch.bfloat16).t(), wp, s, 2, 1), {}  # non-contiguous
    yield (torch.randn(1, 32, device=device, dtype=torch.bfloat16).expand(5, 32), wp, s, 2, 1), {}  # expanded
    yield (torch.randn(0, 32, device=device, dtype=torch.bfloat16), wp, s, 2, 1), {}  # no rows


def _s8s4_linear(device):
    from lowbit_flex.quant import pack_int4

    def w4(n, k):
        return pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8)).to(device)

    def i8(*shape):
        return torch.randint(-128, 128, shape, dtype=torch.int8, device=device)

    rand = lambda *s: torch.rand(*s, device=device) + 0.1
    yield (i8(3, 64), rand(3), w4(16, 64), rand(16)), {}
    yield (i8(2, 5, 64), rand(2, 5, 1), w4(24, 64), rand(24, 2), rand(24)), {"out_dtype": torch.float16}
    yield (i8(1, 128), rand(1, 1), w4(8, 128), rand(8)), {"bias": rand(8).bfloat16(), "out_dtype": torch.bfloat16}
    yield (i8(0, 64), rand(0), w4(16, 64), rand(16)), {}  # no rows (inputs must be contiguous: see its bad-input tests)
    # group-wise scales with their integer-multiplier form (11-bit channel scales: exact products): decode-sized,
    # the multiplying unpack's M (> 128), and no rows
    channel = torch.ldexp(1 + torch.randint(0, 2**10, (32,)) / 2**10, torch.randint(-6, 3, (32,))).to(device)
    mult = torch.randint(1, 17, (2, 32), dtype=torch.int8, device=device)
    ws = (channel[:, None] * mult.t().float()).contiguous()
    yield (i8(3, 256), rand(3), w4(32, 256), ws, None, torch.bfloat16, mult, channel), {}
    yield (i8(130, 256), rand(130), w4(32, 256), ws, rand(32), torch.float16, mult, channel), {}
    yield (i8(0, 256), rand(0), w4(32, 256), ws), {"weight_group_mult": mult, "weight_channel_scale": channel}


def _cutlass_family(device) -> str:
    """The CUTLASS W4A8 family that runs on ``device`` (sm90 needs compute 9.0; the CPU reference takes both)."""
    cuda = device == "cuda" or getattr(device, "type", None) == "cuda"
    return "sm80" if cuda and torch.cuda.get_device_capability() != (9, 0) else "sm90"


def _s8s4_gemm_cutlass(device):
    from lowbit_flex.quant import pack_int4

    w4 = lambda n, k: pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8)).to(device)
    i8 = lambda *s: torch.randint(-128, 128, s, dtype=torch.int8, device=device)
    rand = lambda *s: torch.rand(*s, device=device) + 0.1
    family = _cutlass_family(device)
    small, large = {"sm80": ("16x128x128_s4", "128x128x64_s4"), "sm90": ("16x128x128_ws", "128x128x128_coop")}[family]
    yield (i8(3, 64), rand(3), w4(16, 64), rand(16), None, "bfloat16", family, small), {}
    yield (i8(70, 128), rand(70), w4(24, 128), rand(24), rand(24), "float16", family, large), {}
    yield (i8(128, 5).t(), rand(1).expand(5), w4(16, 128), rand(16), None, "bfloat16", family, small), {}
    yield (i8(0, 64), rand(0), w4(16, 64), rand(16), None, "bfloat16", family, small), {}  # no rows


def _s8s4_group_mult_gemm_cutlass(device):
    from lowbit_flex.quant import pack_int4

    if _cutlass_family(device) != "sm90":
        return  # the kernel runs on compute 9.0 only
    w4 = lambda n, k: pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8)).to(device)
    i8 = lambda *s: torch.randint(-128, 128, s, dtype=torch.int8, device=device)
    rand = lambda *s: torch.rand(*s, device=device) + 0.1
    mult = lambda g, n: torch.randint(0, 17, (g, n), dtype=torch.int8, device=device)
    cfg, wide = "128x128x128_coop_mult", "256x128x128_coop_mult"
    yield (i8(3, 256), rand(3), w4(16, 256), rand(16), mult(2, 16), None, "bfloat16", cfg), {}
    yield (i8(70, 512), rand(70), w4(32, 512), rand(32), mult(2, 32), rand(32), "float16", wide), {}  # group 256
    yield (i8(256, 5).t(), rand(1).expand(5), w4(16, 256), rand(16), mult(1, 16), None, "bfloat16", cfg), {}
    yield (i8(0, 256), rand(0), w4(16, 256), rand(16), mult(2, 16), None, "bfloat16", cfg), {}  # no rows


def _s8s8_groupwise_gemm_cutlass(device):
    if _cutlass_family(device) != "sm90":
        return  # the kernel runs on compute 9.0 only
    i8 = lambda *s: torch.randint(-128, 128, s, dtype=torch.int8, device=device)
    w8 = lambda n, k: torch.randint(-8, 8, (n, k), dtype=torch.int8, device=device)
    rand = lambda *s: torch.rand(*s, device=device) + 0.1
    yield (i8(3, 256), rand(3), w8(16, 256), rand(16, 2), None, "bfloat16", "128x128x128_g128"), {}
    yield (i8(5, 64), rand(5), w8(24, 64), rand(24, 2), rand(24), "float16", "128x128x128_g32"), {}
    yield (i8(256, 5).t(), rand(1).expand(5), w8(16, 256), rand(16, 1), None, "bfloat16", "128x128x128_g128_pp"), {}
    yield (i8(0, 256), rand(0), w8(16, 256), rand(16, 2), None, "bfloat16", "128x128x128_g128"), {}  # no rows


def _w4a8_gemv_cuda(device):
    from lowbit_flex.quant import pack_int4

    w4 = lambda n, k: pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8)).to(device)
    i8 = lambda *s: torch.randint(-128, 128, s, dtype=torch.int8, device=device)
    rand = lambda *s: torch.rand(*s, device=device) + 0.1
    cfg = "mma_n1k8_pf2"
    yield (i8(3, 256), rand(3), w4(24, 256), rand(24), None, "bfloat16", cfg), {}
    yield (i8(16, 128), rand(16), w4(40, 128), rand(40, 1), rand(40), "float16", "mma_n4k2_pf2"), {}
    x = torch.randn(1, 384, device=device, dtype=torch.bfloat16)  # quantized in the kernel, groups of 128
    yield (x, None, w4(16, 384), rand(16, 3), rand(16), "bfloat16", cfg), {}
    yield (torch.randn(256, 2, device=device).t(), None, w4(8, 256), rand(8, 2), None, "float16", cfg), {}  # strided
    yield (i8(1, 256).expand(4, 256), rand(1).expand(4), w4(8, 256), rand(8), None, "bfloat16", cfg), {}  # expanded
    yield (i8(0, 256), rand(0), w4(16, 256), rand(16), None, "bfloat16", cfg), {}  # no rows


def _float_weight_gemv_cuda(device):
    from lowbit_flex.quant import pack_fpx_tiles

    fp8 = (torch.randn(24, 256, device=device) * 50).to(torch.float8_e4m3fn)
    rand = lambda *s: torch.rand(*s, device=device) + 0.5
    tiles = lambda bits, n, k: pack_fpx_tiles(torch.randint(0, 2**bits, (n, k), dtype=torch.uint8), bits).to(device)
    bf16 = lambda *s: torch.randn(*s, device=device, dtype=torch.bfloat16)
    yield (bf16(3, 256), fp8, rand(24), None, 4, 3, "cp_n2k4"), {}
    b = torch.randn(40, device=device, dtype=torch.float16)
    x = torch.randn(16, 136, device=device, dtype=torch.float16)
    yield (x, tiles(4, 40, 136), rand(40), b, 2, 1, "cp_n1k8"), {}  # two 8-token tiles, a partial K tile
    yield (bf16(136, 5).t(), tiles(6, 16, 136), rand(16), None, 3, 2, "cp_n4k2"), {}  # non-contiguous
    yield (bf16(1, 136).expand(4, 136), tiles(6, 16, 136), rand(16), None, 2, 3, "cp_n1k4"), {}  # expanded
    yield (bf16(0, 256), fp8, rand(24), None, 4, 3, "cp_n2k4"), {}  # no rows


def _float_weight_gemm_cuda(device):
    from lowbit_flex.quant import pack_fpx_tiles

    rand = lambda *s: torch.rand(*s, device=device) + 0.5
    tiles = lambda bits, n, k: pack_fpx_tiles(torch.randint(0, 2**bits, (n, k), dtype=torch.uint8), bits).to(device)
    bf16 = lambda *s: torch.randn(*s, device=device, dtype=torch.bfloat16)
    b = torch.randn(40, device=device, dtype=torch.float16)
    x = torch.randn(70, 136, device=device, dtype=torch.float16)
    yield (x, tiles(4, 40, 136), rand(40), b, 2, 1, "wgmma_64x128"), {}  # a partial K tile, split K
    yield (bf16(264, 5).t(), tiles(6, 16, 264), rand(16), None, 3, 2, "wgmma_16x128"), {}  # non-contiguous
    yield (bf16(1, 256).expand(20, 256), tiles(6, 24, 256), rand(24), None, 2, 3, "wgmma_256x128"), {}  # expanded
    yield (bf16(0, 256), tiles(4, 24, 256), rand(24), None, 2, 1, "wgmma_128x128"), {}  # no rows
    fp8 = (torch.randn(24, 272, device=device) * 50).to(torch.float8_e4m3fn)
    yield (bf16(33, 272), fp8, rand(24), None, 4, 3, "wgmma_32x128"), {}  # fp8 rows, a partial K tile


def _fp8_weight_gemm_cutlass(device):
    fp8 = (torch.randn(24, 256, device=device) * 50).to(torch.float8_e4m3fn)
    rand = lambda *s: torch.rand(*s, device=device) + 0.5
    x = torch.randn(70, 256, device=device, dtype=torch.bfloat16)
    yield (x, fp8, rand(24), torch.randn(24, device=device, dtype=torch.bfloat16), "64x128x64_coop_sk"), {}
    xt = torch.randn(272, 5, device=device, dtype=torch.float16).t()  # non-contiguous
    yield (xt, fp8[:16, :16].repeat(1, 17), rand(16), None, "128x256x64_coop"), {}
    xe = torch.randn(1, 256, device=device, dtype=torch.bfloat16).expand(4, 256)  # expanded
    yield (xe, fp8, rand(24), None, "256x128x64_coop"), {}
    yield (x[:0], fp8, rand(24), None, "128x128x64_coop_sk"), {}  # no rows


def _w4a8_linear(device):
    from lowbit_flex.quant import pack_int4

    w4 = lambda n, k: pack_int4(torch.randint(-8, 8, (n, k), dtype=torch.int8)).to(device)
    rand = lambda *s: torch.rand(*s, device=device) + 0.1
    yield (torch.randn(3, 64, device=device, dtype=torch.bfloat16), w4(16, 64), rand(16)), {}
    x = torch.randn(2, 5, 64, device=device).transpose(0, 1)  # non-contiguous float32 rows
    yield (x, w4(24, 64), rand(24, 2), rand(24)), {"out_dtype": torch.float16}
    yield (torch.randn(1, 128, device=device, dtype=torch.float16).expand(4, 128), w4(8, 128), rand(8)), {}
    yield (torch.randn(0, 64, device=device, dtype=torch.bfloat16), w4(16, 64), rand(16)), {}  # 0 rows
    channel = torch.ldexp(1 + torch.randint(0, 2**10, (32,)) / 2**10, torch.randint(-6, 3, (32,))).to(device)
    mult = torch.randint(1, 17, (2, 32), dtype=torch.int8, device=device)
    ws = (channel[:, None] * mult.t().float()).contiguous()  # group-wise with the integer-multiplier form (exact)
    yield (torch.randn(5, 256, device=device, dtype=torch.bfloat16), w4(32, 256), ws, None, None, mult, channel), {}
    yield (torch.randn(130, 256, device=device, dtype=torch.bfloat16), w4(32, 256), ws, None, None, mult, channel), {}


def _rel_pos_attention(device):
    # Window-like (5 x 7 keys, D = 80 split 64 + 16 in the kernel) in SAM's (B*H, L, k) layout, and a 64-wide grid.
    q, k, v = (torch.randn(1, 2, 35, 80, device=device, dtype=torch.bfloat16) for _ in range(3))
    rel = (
        torch.randn(2, 35, 5, device=device, dtype=torch.bfloat16),
        torch.randn(2, 35, 7, device=device, dtype=torch.bfloat16),
    )
    yield (q, k, v, *rel), {}
    q, k, v = (torch.randn(2, 1, 64, 32, device=device, dtype=torch.float16) for _ in range(3))
    rel = (
        torch.randn(2, 1, 64, 2, device=device, dtype=torch.float16),
        torch.randn(2, 1, 64, 32, device=device, dtype=torch.float16),
    )
    yield (q, k, v, *rel), {"scale": 0.25}
    q_t = torch.randn(2, 1, 32, 64, device=device, dtype=torch.float16).transpose(-1, -2)  # non-contiguous
    yield (q_t, k, v, *rel), {}
    yield (q[:1].expand(2, 1, 64, 32), k, v, *rel), {}  # expanded over the batch
    # SAM's token-major views of one qkv projection: the output keeps that (B, L, H, D) layout.
    qkv = torch.randn(1, 35, 3, 2, 80, device=device, dtype=torch.bfloat16)
    rel = (torch.randn(1, 2, 35, 5, device=device, dtype=torch.bfloat16),
           torch.randn(1, 2, 35, 7, device=device, dtype=torch.bfloat16))  # fmt: skip
    yield (*qkv.permute(2, 0, 3, 1, 4).unbind(0), *rel), {}
    # An empty batch (contiguous: torch's clone_input cannot copy an empty view at a storage offset).
    yield (
        (*(torch.randn(0, 2, 35, 80, device=device, dtype=torch.bfloat16) for _ in range(3)), *(t[:0] for t in rel)),
        {},
    )


def _sam_rel_pos(device):
    th, tw = torch.randn(9, 16, device=device), torch.randn(13, 16, device=device)
    yield (torch.randn(2, 35, 16, device=device), th, tw, 5, 7), {}  # SAM's (B*H, L, D)
    # SAM's token-major view of one qkv projection (non-contiguous), bf16.
    qkv = torch.randn(1, 35, 3, 2, 16, device=device, dtype=torch.bfloat16)
    yield (qkv.permute(2, 0, 3, 1, 4)[0], th.bfloat16(), tw.bfloat16(), 5, 7), {}
    yield (torch.randn(1, 1, 35, 16, device=device).expand(2, 3, 35, 16), th, tw, 5, 7), {}  # expanded over heads
    yield (torch.randn(1, 2, 8, 35, device=device).transpose(-1, -2), th[:, :8], tw[:, :8], 5, 7), {}  # D strided
    yield (torch.randn(0, 2, 35, 16, device=device), th, tw, 5, 7), {}  # an empty batch


def _quantize_fp8(device):
    x = torch.randn(2, 3, 20, 16, device=device)
    yield (x,), {}
    yield (x.bfloat16(), "block", 8, torch.float8_e5m2), {}
    yield (x, "token"), {"shift": torch.randn(2, 3, 1, 16, device=device)}
    yield (torch.randn(5, 7, device=device, dtype=torch.float16), "tensor"), {}
    xt = torch.randn(2, 3, 16, 20, device=device).transpose(-1, -2)  # non-contiguous
    yield (xt,), {}
    yield (xt, "token"), {}
    yield (xt, "block", 4), {}
    yield (torch.randn(1, 1, 20, 16, device=device).expand(2, 3, 20, 16), "token"), {}  # expanded


def _quantize_int8_blockwise(device):
    x = torch.randn(1, 2, 30, 16, device=device, dtype=torch.bfloat16)
    yield (x, 8), {}
    yield (x, 16, x.float().mean(dim=-2, keepdim=True)), {}
    yield (torch.randn(1, 2, 16, 30, device=device).transpose(-1, -2), 8), {}  # non-contiguous
    yield (torch.randn(1, 1, 30, 16, device=device).expand(2, 3, 30, 16), 16), {}  # expanded


def _fp8_attention(device):
    from lowbit_flex.attention.lowbit_attention import quantize_attention_inputs

    q = torch.randn(1, 2, 70, 64, device=device)
    k, v = torch.randn(2, 1, 1, 130, 64, device=device).unbind(0)
    yield quantize_attention_inputs(q, k, v, "fp8"), {"causal": True}
    yield quantize_attention_inputs(q, k, v, "int8"), {"out_dtype": torch.float16, "pv_fp16_accum": True}
    # The accurate mode: v in 16 bits, not quantized, v_scale None.
    yield quantize_attention_inputs(q, k, v.bfloat16(), "int8", pv="fp16"), {"causal": True}
    # No queries: an empty output.
    _, k8, v8, _, ks, vs = quantize_attention_inputs(q, k, v, "fp8")
    q0 = torch.empty(1, 2, 0, 64, device=device, dtype=torch.float8_e4m3fn)
    yield (q0, k8, v8, torch.empty(1, 2, 0, device=device), ks, vs), {}


def _fp8_attention_reference(device):
    # fp8_attention's opaque path for GPUs without fp8 MMA: every argument positional (the schema has no defaults).
    for args, kw in _fp8_attention(device):
        kw = {"causal": False, "out_dtype": torch.bfloat16, "pv_fp16_accum": False} | kw
        yield (*args, kw["causal"], 0.2, dtype_name(kw["out_dtype"]), kw["pv_fp16_accum"]), {}


def _lowbit_attention(device):
    q = torch.randn(1, 4, 70, 64, device=device, dtype=torch.bfloat16)
    k, v = torch.randn(2, 1, 2, 130, 64, device=device, dtype=torch.bfloat16).unbind(0)
    yield (q, k, v), {"causal": True}  # GQA, ragged, Lq != Lk
    yield (q.transpose(1, 2).contiguous().transpose(1, 2), k, v), {"qk": "int8", "pv": "fp16"}  # non-contiguous q
    kx = torch.randn(1, 1, 1, 64, device=device, dtype=torch.float16).expand(1, 2, 130, 64)  # expanded: one key
    yield (q.half(), kx, v.half()), {"scale": 0.2, "pv_fp16_accum": True, "smooth_k": False}
    yield (q[:, :, :0], k, v), {}  # no queries: an empty output


SAMPLES = {
    "quantize_int8_rowwise": _quantize_int8_rowwise,
    "s8s4_linear": _s8s4_linear,
    "s8s4_gemm_cutlass": _s8s4_gemm_cutlass,
    "s8s4_group_mult_gemm_cutlass": _s8s4_group_mult_gemm_cutlass,
    "s8s8_groupwise_gemm_cutlass": _s8s8_groupwise_gemm_cutlass,
    "w4a8_gemv_cuda": _w4a8_gemv_cuda,
    "float_weight_gemv_cuda": _float_weight_gemv_cuda,
    "float_weight_gemm_cuda": _float_weight_gemm_cuda,
    "fp8_weight_gemm_cutlass": _fp8_weight_gemm_cutlass,
    "w4a8_linear": _w4a8_linear,
    "rel_pos_attention": _rel_pos_attention,
    "sam_rel_pos": _sam_rel_pos,
    "quantize_fp8": _quantize_fp8,
    "quantize_int8_blockwise": _quantize_int8_blockwise,
    "fp8_attention": _fp8_attention,
    "_fp8_attention_reference": _fp8_attention_reference,
    "lowbit_attention": _lowbit_attention,
    "fp8_weight_only_linear": _fp8_weight_only_linear,
    "fpx_weight_only_linear": _fpx_weight_only_linear,
}
