"""Launcher calls compiled for sm_80 and sm_90 by ``tests/kernels/test_triton_aot.py`` (no GPU needed).

Each ``case_*`` function runs Triton launchers on small CPU tensors covering every constexpr branch (configs, dtypes,
paths) that the GPU can take; it returns ``False`` when its kernels are never launched on the arch being compiled
for. Add one per kernel module; ``test_every_kernel_module_has_a_case`` checks that.
"""

import torch


def case_quantize_int8_rowwise():
    from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        quantize_int8_rowwise_triton(torch.empty(64, 4096, dtype=dtype))  # single pass
        # decode: 1024-value chunks of the row, every whole-row amax block (2048 .. 16384 values)
        for k in (2048, 4096, 8192, 14336):
            quantize_int8_rowwise_triton(torch.empty(8, k, dtype=dtype))
    quantize_int8_rowwise_triton(torch.empty(2, 20000, dtype=torch.bfloat16))  # two passes
    quantize_int8_rowwise_triton(torch.empty(2048, 9000, dtype=torch.bfloat16))  # two passes of 8 warps (prefill)
    quantize_int8_rowwise_triton(torch.empty(64, 9000, dtype=torch.bfloat16))  # one pass of 16 warps
    quantize_int8_rowwise_triton(torch.empty(64, 64, dtype=torch.bfloat16))  # many rows per program


def case_common():
    from lowbit_flex.kernels.common import reduce_split_k

    # The shared split-K reduce: with and without the weight-only per-channel scale, fp32 (W4A8) and half
    # (weight-only) bias or none, both output dtypes.
    part = torch.empty(3, 5, 40)
    for out_dtype, bias_dtype in ((torch.bfloat16, torch.float32), (torch.float16, torch.float16)):
        out, bias = torch.empty(5, 40, dtype=out_dtype), torch.empty(40, dtype=bias_dtype)
        reduce_split_k(part, out, bias=bias)
        reduce_split_k(part, out, torch.empty(40), bias, post_scale=2.0**8)
        reduce_split_k(part, out, torch.empty(40))
        reduce_split_k(part, out)


def case_s8s4_linear():
    from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS, s8s4_linear_triton

    M, N, K = 48, 256, 1024
    x, x_scale = torch.empty(M, K, dtype=torch.int8), torch.empty(M)
    w, bias = torch.empty(N, K // 2, dtype=torch.int8), torch.empty(N)
    # Every config once (per channel, bias, bf16) with x de-interleaved (M >= 17) and read in stride 2 (decode M);
    # the other constexpr branches once each (compiles cost ~1 s).
    for cfg in TRITON_CONFIGS.values():
        s8s4_linear_triton(x, x_scale, w, torch.empty(N), bias, torch.bfloat16, config=cfg)
        s8s4_linear_triton(x[:8], x_scale[:8], w, torch.empty(N), bias, torch.bfloat16, config=cfg)
    for name in ("mid_swap_64x128x128", "mid_swap_64x128x128_splitk"):  # group scales
        cfg = TRITON_CONFIGS[name]
        s8s4_linear_triton(x, x_scale, w, torch.empty(N, K // 128), None, torch.float16, config=cfg)
        s8s4_linear_triton(x, x_scale, w, torch.empty(N, K // 128), bias, torch.bfloat16, config=cfg)
    # K = 96: BLOCK_K = 32, so each nibble plane's dot has K = 16 (x interleaved whatever M: no de-interleave).
    x96, w96 = torch.empty(80, 96, dtype=torch.int8), torch.empty(N, 48, dtype=torch.int8)
    mid = TRITON_CONFIGS["mid_64x128x128"]
    s8s4_linear_triton(x96, torch.empty(80), w96, torch.empty(N), None, torch.bfloat16, mid)


def case_s8s4_unpacked_gemm():
    from lowbit_flex.kernels.s8s4_unpacked_gemm import UNPACKED_CONFIGS, s8s4_unpacked_gemm_triton

    M, N, K = 300, 256, 1024
    x, x_scale = torch.empty(M, K, dtype=torch.int8), torch.empty(M)
    w, bias = torch.empty(N, K // 2, dtype=torch.int8), torch.empty(N)
    # Every config per channel and group-wise (group 128; groups of 32 take 32-wide K blocks), bias or not.
    for cfg in UNPACKED_CONFIGS.values():
        s8s4_unpacked_gemm_triton(x, x_scale, w, torch.empty(N), bias, torch.bfloat16, cfg)
        s8s4_unpacked_gemm_triton(x, x_scale, w, torch.empty(N, K // 128), None, torch.float16, cfg)
    cfg = UNPACKED_CONFIGS["s8s8_64x128x128_w4_s3"]
    s8s4_unpacked_gemm_triton(x, x_scale, w, torch.empty(N, K // 32), bias, torch.bfloat16, cfg)
    # Group multipliers (the table's row for them): the multiplying unpack, then the per-channel main loop.
    mult = torch.empty(K // 128, N, dtype=torch.int8)
    cfg = UNPACKED_CONFIGS["s8s8_128x128x128_w8_s3"]
    s8s4_unpacked_gemm_triton(x, x_scale, w, torch.empty(N), bias, torch.bfloat16, cfg, w_group_mult=mult)


def case_rel_pos_attention():
    from lowbit_flex.kernels.rel_pos_attention import (
        SM90_CONFIGS,
        Bias,
        RelPosConfig,
        _rel_pos_attention_kernel,
        rel_pos_attention_triton,
        rel_pos_plan,
    )

    def attend(k_h, k_w, d, dtype=torch.bfloat16, config=None):
        L = k_h * k_w
        q = torch.empty(1, 2, L, d, dtype=dtype)
        rel_h, rel_w = torch.empty(1, 2, L, k_h, dtype=dtype), torch.empty(1, 2, L, k_w, dtype=dtype)
        # The launcher on CPU stand-ins launches what a trace would (pointer loads); an eager plan with TMA loads
        # (sm_90: the table's packed rows on long grids, the explicit TMA configs) is launched directly as well.
        rel_pos_attention_triton(q, q, q, rel_h, rel_w, config=config)
        launch, scalars = rel_pos_plan(q, q, q, rel_h, rel_w, None, config)
        if launch.kernel is _rel_pos_attention_kernel and launch.meta["TMA"]:
            launch.kernel[launch.grid](q, q, q, rel_h, rel_w, torch.empty_like(q), *scalars, **launch.meta)

    # Every row of the config table at each head dim it serves (80 and 96: split tiles; 128, 256: one tile), on the
    # grids of its length: short = SAM's 14 x 14 windows (2 packed rows per block, ragged L); long = the 64 x 64
    # global grid (whole rows, no masks) and 48 x 40 (the table widens it to 3 rows per 128-slot block).
    dims = {64: (64,), 128: (80, 96, 128), 256: (256,)}
    for block_d, short in SM90_CONFIGS:
        for d in dims[block_d]:
            for k_h, k_w in [(14, 14)] if short else [(64, 64), (48, 40)]:
                attend(k_h, k_w, d)
    attend(14, 14, 80, torch.float16)
    attend(2, 160, 64)  # rows wider than 128 slots: the one-hot MMA
    attend(37, 1, 64)  # narrow grids: rel_h gathered per slot (32 rows per block), short and long tables
    attend(100, 3, 80)
    # TMA loads (sm_90 only; the table picks them for packed rows on long grids, the benchmark's sweep elsewhere):
    # packed rows, the split head dim's second tile, and the 48 x 40 grid's 128-slot tile with 4 and 8 warps.
    for k_h, k_w, d, n, warps in [(14, 14, 64, 32, 4), (48, 40, 80, 128, 8), (48, 40, 64, 128, 4)]:
        attend(k_h, k_w, d, config=RelPosConfig(64, n, 0, warps, 3, Bias.ROWS, True, True))
    # rel_h added per logit on the 48 x 40 grid (the sweep's A/B against the per-key-row max), pointer and TMA loads
    for tma in (False, True):
        attend(48, 40, 64, config=RelPosConfig(64, 128, 0, 4, 3, Bias.ROWS, True, tma, key_row_max=False))
    if torch.cuda.get_device_capability() == (9, 0):
        _gluon_rel_pos_attention()


def _gluon_rel_pos_attention():
    # The Gluon kernel (sm_90): every bias path (one row per block with and without padding slots, 2-4 selected
    # rows, the last block's logit mask, no bias), both head dims, fp16, 2-4 ring slots, SAM's token-major views,
    # two and three consumer warpgroups, rel_h from memory or staged in shared memory.
    # Launched directly: on CPU stand-ins a plan launches its traced (Triton) plan, as a trace would.
    from lowbit_flex.kernels.rel_pos_attention import Bias, gluon_config, rel_pos_plan

    def attend(k_h, k_w, d, config, dtype=torch.bfloat16, token_major=False):
        L = k_h * k_w
        q = (
            torch.empty(1, L, 2, d, dtype=dtype).transpose(1, 2)
            if token_major
            else torch.empty(1, 2, L, d, dtype=dtype)
        )
        rel_h, rel_w = torch.empty(1, 2, L, k_h, dtype=dtype), torch.empty(1, 2, L, k_w, dtype=dtype)
        launch, scalars = rel_pos_plan(q, q, q, rel_h, rel_w, None, config)
        assert launch.kernel.fn.__name__ == "_rel_pos_attention_fwd_sm90_ws", (k_h, k_w, d, config)
        out = torch.empty_like(q)
        launch.kernel[launch.grid](q, q, q, rel_h, rel_w, out, *scalars, **launch.meta)

    for stages in (2, 3, 4):
        attend(64, 64, 64, gluon_config(64, stages), token_major=stages == 3)
    attend(64, 64, 128, gluon_config(64, 3))
    attend(64, 64, 64, gluon_config(128, 3))  # two rows per block
    attend(48, 40, 64, gluon_config(64, 3))
    attend(48, 40, 64, gluon_config(128, 3), torch.float16)
    attend(14, 14, 64, gluon_config(64, 3))  # four rows, the last block past L
    attend(7, 9, 64, gluon_config(32, 3))  # three rows, 7 % 3
    attend(1, 100, 64, gluon_config(128, 3))
    attend(64, 64, 64, gluon_config(128, 3, Bias.NONE))
    attend(10, 30, 64, gluon_config(128, 3, Bias.NONE))  # a partial last block
    # three consumer warpgroups (192 query rows): D = 64 with 64-slot blocks, the tile that fits their registers
    for stages in (2, 3, 4):
        attend(64, 64, 64, gluon_config(64, stages, block_m=192))
    attend(48, 40, 64, gluon_config(64, 3, block_m=192), token_major=True)
    attend(14, 14, 64, gluon_config(64, 3, block_m=192))
    attend(64, 64, 64, gluon_config(64, 3, Bias.NONE, block_m=192))
    # rel_h staged in shared memory (48 KiB more with three consumers)
    for stages in (3, 4):
        attend(64, 64, 64, gluon_config(64, stages, block_m=192, rel_h_staged=True), token_major=stages == 3)
    attend(48, 40, 64, gluon_config(64, 3, block_m=192, rel_h_staged=True), torch.float16)
    attend(128, 64, 64, gluon_config(64, 3, block_m=192, rel_h_staged=True))  # the most it stages: 48 KiB
    attend(64, 64, 128, gluon_config(64, 2, rel_h_staged=True))
    attend(3, 64, 128, gluon_config(64, 4, rel_h_staged=True))
    # query chunks across heads (each ring slot two heads' blocks): the table's tile, rel_h staged or not, 4 slots,
    # packed rows, a partial last chunk (196 rows), no bias, two consumers at D = 128 (160 KiB)
    for stages, staged in [(3, True), (4, True), (3, False)]:
        attend(
            64, 64, 64, gluon_config(64, stages, block_m=192, rel_h_staged=staged, cross_heads=True), token_major=staged
        )
    attend(128, 64, 64, gluon_config(64, 3, block_m=192, rel_h_staged=True, cross_heads=True))  # 168 KiB
    attend(48, 40, 64, gluon_config(64, 3, block_m=192, cross_heads=True), torch.float16)
    attend(14, 14, 64, gluon_config(64, 3, block_m=192, cross_heads=True))
    attend(64, 64, 64, gluon_config(64, 3, Bias.NONE, block_m=192, cross_heads=True))
    attend(64, 64, 128, gluon_config(64, 2, rel_h_staged=True, cross_heads=True))


def case_sam_rel_pos():
    from lowbit_flex.kernels.sam_rel_pos import sam_rel_pos_triton

    # Products of 16, 32 and 64 columns (1 x 8, 14 x 14, 24 x 20, 64 x 64 and 256-wide grids: four products per
    # rel_w program), head dims padded to 16 and to 256, each dtype, SAM's strided (B, H, L, D) view and a 3-D query.
    for q_h, q_w, d in ((1, 8, 8), (14, 14, 80), (24, 20, 64), (64, 64, 64), (48, 40, 128), (2, 256, 256)):
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            q = torch.empty(1, q_h * q_w, 3, 2, d, dtype=dtype).permute(2, 0, 3, 1, 4)[0]
            tables = torch.empty(2 * q_h - 1, d, dtype=dtype), torch.empty(2 * q_w - 1, d, dtype=dtype)
            sam_rel_pos_triton(q, *tables, q_h, q_w)
    table = torch.empty(27, 64, dtype=torch.bfloat16)
    sam_rel_pos_triton(torch.empty(2, 196, 64, dtype=torch.bfloat16), table, table, 14, 14)


def case_quantize_groups():
    from lowbit_flex.kernels.quantize_groups import quantize_groups_triton

    x = torch.empty(2, 4, 300, 64, dtype=torch.bfloat16)
    shift = torch.empty(2, 4, 1, 64)
    # Native e4m3fn conversion only from sm_89 (quantize_fp8 builds the codes with integer operations below it, and
    # on every architecture when asked); e5m2 and int8 everywhere.
    natives = (True, False) if torch.cuda.get_device_capability() >= (8, 9) else (False,)
    for native in natives:
        for granularity in ("tensor", "head", "token", "block"):  # "tensor"/"head": the two-kernel chunked path
            quantize_groups_triton(x, granularity, 128, torch.float8_e4m3fn, None, native)
        quantize_groups_triton(torch.empty(3, 7), "tensor", 128, torch.float8_e4m3fn, None, native)  # single pass
    quantize_groups_triton(x, "block", 128, torch.float8_e5m2, shift)
    quantize_groups_triton(x.half(), "block", 128, torch.int8, shift)


def case_fp8_attention():
    # The format op on pre-quantized inputs: what its dispatch picks (the long and short tiles, TMA where sm_90 and
    # the layout allow it, plain loads where the layout does not), both QKᵀ formats, both PV formats and head dims.
    from lowbit_flex.kernels.fp8_attention import fp8_attention_triton

    if torch.cuda.get_device_capability() < (8, 9):
        return False  # fp8 MMA needs sm_89+: below it the op runs its reference and never launches this kernel

    def run(qk_dtype, d, causal, pv_fp16, L=300, v_dtype=torch.float8_e4m3fn, v_token_major=True):
        B, H, Hkv = 1, 4, 2
        q, k = torch.empty(B, H, L, d, dtype=qk_dtype), torch.empty(B, Hkv, L, d, dtype=qk_dtype)
        v = torch.empty(B, Hkv, L, d, dtype=v_dtype)
        if v_dtype == torch.float8_e4m3fn and v_token_major:
            v = torch.empty(B, Hkv, d, L, dtype=v_dtype).transpose(-1, -2)
        n = -(-L // 128)
        qs, ks = torch.empty(B, H, n), torch.empty(B, Hkv, n)
        vs = torch.empty(B, Hkv) if v_dtype == torch.float8_e4m3fn else None  # a 16-bit v: the accurate mode
        fp8_attention_triton(q, k, v, qs, ks, vs, causal, None, torch.bfloat16, pv_fp16)

    run(torch.float8_e4m3fn, 128, False, False)
    run(torch.float8_e4m3fn, 128, False, False, v_token_major=False)  # row-major fp8 v: TMA row-major descriptor
    run(torch.float8_e4m3fn, 64, True, False, L=295)  # a ragged last key block
    run(torch.float8_e4m3fn, 64, False, False, L=50)  # the short-sequence pick
    run(torch.int8, 128, True, False)
    run(torch.float8_e4m3fn, 128, False, True)
    # The accurate mode (P and V in 16 bits): both QKᵀ formats, both 16-bit v dtypes, both head dims and tiles.
    run(torch.int8, 128, True, False, v_dtype=torch.bfloat16)
    run(torch.float8_e4m3fn, 128, False, False, v_dtype=torch.bfloat16)
    run(torch.int8, 64, False, False, v_dtype=torch.float16)
    run(torch.float8_e4m3fn, 64, True, False, L=50, v_dtype=torch.float16)
    # A v whose rows are not 16-byte aligned (row stride 65 fp8 bytes): plain loads even where TMA could run.
    q, k = torch.empty(1, 2, 100, 64, dtype=torch.float8_e4m3fn), torch.empty(1, 2, 100, 64, dtype=torch.float8_e4m3fn)
    v = torch.empty(1, 2, 100, 65, dtype=torch.float8_e4m3fn)[..., :64]
    ones = torch.empty(1, 2, 1)
    fp8_attention_triton(q, k, v, ones, ones, torch.empty(1, 2), False, None, torch.bfloat16, False)
    if torch.cuda.get_device_capability() == (9, 0):
        _gluon_fp8_attention()


def _gluon_fp8_attention():
    # The Gluon kernel (sm_90): every config of GLUON_CONFIGS, both PV formats, both QKᵀ formats and head dims, on
    # the layouts lowbit_attention's pass writes. Launched directly: on CPU stand-ins a plan launches its traced
    # (Triton) plan, as a trace would.
    from lowbit_flex.kernels.fp8_attention import GLUON_CONFIGS, attention_plan
    from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton

    for d, qk_dtype, causal in ((128, torch.float8_e4m3fn, False), (64, torch.int8, True)):
        q, k, v = torch.empty(1, 4, 300, d, dtype=torch.bfloat16), *(torch.empty(1, 2, 300, d) for _ in range(2))
        k, v = k.bfloat16(), v.bfloat16()
        q8, qs, k8, ks, v8, vs = quantize_qkv_triton(q, k, v, qk_dtype, True, True)
        v8_mma = quantize_qkv_triton(q, k, v, qk_dtype, True, True, True)[4]
        for config in GLUON_CONFIGS:
            # e4m3 v with its keys in order and in the MMA's order; a 16-bit v
            for vv, vsc, mma in ((v8, vs, False), (v8_mma, vs, True), (v, None, False)):
                launch, scalars = attention_plan(q8, k8, vv, qs, ks, vsc, causal, None, False, config, mma)
                assert launch.kernel.fn.__name__ == "_fp8_attention_fwd_sm90_ws", launch.kernel
                out = torch.empty(q.shape, dtype=torch.bfloat16)
                launch.kernel[launch.grid](q8, k8, vv, qs, ks, ks if vsc is None else vsc, out, *scalars, **launch.meta)


def case_lowbit_attention():
    # lowbit::lowbit_attention's two launches (Q/K/V quantization in one pass, then attention) for every format
    # pair, head dim and input dtype, the short-query tile, and every config of the table.
    from lowbit_flex.kernels.fp8_attention import CONFIGS, attention_plan
    from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton
    from lowbit_flex.ops.lowbit_attention import QK_FORMATS, run_kernels

    if torch.cuda.get_device_capability() < (8, 9):
        return False  # no fp8 MMA: lowbit_attention runs SDPA there

    def qkv(L, d, dtype=torch.bfloat16, Lq=None):
        return torch.empty(1, 4, Lq or L, d, dtype=dtype), *(torch.empty(1, 2, L, d, dtype=dtype) for _ in range(2))

    for qk in QK_FORMATS:
        for pv in ("fp8", "fp16"):
            for d in (64, 128):
                run_kernels(*qkv(300, d), True, None, qk, pv, True, False)
    run_kernels(*qkv(300, 128, torch.float16), False, None, "int8", "fp8", False, True)
    run_kernels(*qkv(300, 64, torch.float32), False, None, "fp8", "fp16", True, False)
    run_kernels(*qkv(300, 64, Lq=50), True, None, "fp8", "fp8", True, False)  # one 64-query tile

    def each_plan(q8, k8, vv, qs, ks, vsc, causal, config):
        # the plan as the GPU's eager call launches it (a Gluon kernel, a maxnreg cap) and as a traced call does: on
        # CPU stand-ins a plan launches only the latter. v in the MMA's key order when e4m3 (as the pass writes it).
        launch, scalars = attention_plan(q8, k8, vv, qs, ks, vsc, causal, None, False, config, vsc is not None)
        out = torch.empty(q8.shape, dtype=torch.bfloat16)
        for plan in (launch,) if launch.traced is None else (launch, launch.traced):
            plan.kernel[plan.grid](q8, k8, vv, qs, ks, ks if vsc is None else vsc, out, *scalars, **plan.meta)

    # Every config of the table (TMA ones as TMA on sm_90: the layouts here allow it), fp8 PV and 16-bit PV.
    q, k, v = qkv(300, 128)
    q8, qs, k8, ks, v8, vs = quantize_qkv_triton(q, k, v, torch.float8_e4m3fn, True, True, True)
    for config in CONFIGS:
        each_plan(q8, k8, v8, qs, ks, vs, True, config)
        each_plan(q8, k8, v, qs, ks, None, False, config)
    # The rule's e4m3-V tile for each QKᵀ format and mask (int8 QKᵀ: the capped tile)
    for qk_dtype in QK_FORMATS.values():
        q8, qs, k8, ks, v8, vs = quantize_qkv_triton(q, k, v, qk_dtype, True, True, True)
        for causal in (False, True):
            each_plan(q8, k8, v8, qs, ks, vs, causal, None)


def case_float_weight_only_linear():
    # Every config of every backend the weight-only dispatch can pick (kernels float_weight_gemv,
    # float_weight_only_linear and float_weight_dequant), for each format, both x dtypes, split and unsplit K,
    # ragged and whole-tile K, with and without bias.
    import lowbit_flex.kernels.float_weight_dispatch as d
    from lowbit_flex.kernels.float_weight_gemv import GEMV_CONFIGS
    from lowbit_flex.kernels.float_weight_only_linear import DOT_CONFIGS
    from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS
    from lowbit_flex.kernels.float_weight_tma import TMA_CONFIGS
    from lowbit_flex.quant import tile_words_per_row

    # sm_80 has no e4m3 conversion instruction: the dispatch picks the bit decode there (the launch runs on CPU
    # tensors here, so the architecture comes from the patched capability).
    native = torch.cuda.get_device_capability() >= (8, 9)
    d.fp8_native_supported = lambda device: native

    def weight(ebits, mbits, n, k):
        if 1 + ebits + mbits == 8:
            return torch.empty(n, k, dtype=torch.float8_e4m3fn)
        return torch.empty(n, tile_words_per_row(k, 1 + ebits + mbits), dtype=torch.int32)

    formats = ((4, 3), (3, 2), (2, 3), (2, 1))
    plans = [(d.Backend.GEMV, c, 1) for c in GEMV_CONFIGS] + [(d.Backend.DOT, c, 40) for c in DOT_CONFIGS]
    if torch.cuda.get_device_capability() >= (9, 0):  # the TMA kernels: sm_90 only
        plans += [(d.Backend.TMA, c, 200) for c in TMA_CONFIGS]
        # forced Gluon configs launch their traced plan here (CPU stand-ins): the Triton tiles they fall back to
        plans += [(d.Backend.GLUON, c, 200) for c in GLUON_CONFIGS]
    for backend, config, m in plans:
        ragged_k = 1000 if backend in (d.Backend.GEMV, d.Backend.DOT) else 1008  # TMA: 16-byte rows (fp8: K % 16)
        for ebits, mbits in formats:
            if backend is d.Backend.GLUON and 1 + ebits + mbits == 8:
                continue  # fp4 / fp6 only
            for n, k, dtype, bias in ((512, 1024, torch.bfloat16, True), (16, 4096, torch.float16, False)):
                x, s = torch.empty(m, k, dtype=dtype), torch.empty(n)
                b = torch.empty(n, dtype=dtype) if bias else None
                d.float_weight_only_linear_cuda(x, weight(ebits, mbits, n, k), s, b, ebits, mbits, backend=backend,
                                                config=config)  # fmt: skip
            x = torch.empty(m, ragged_k, dtype=torch.bfloat16)  # K not a whole number of 128-code tiles
            d.float_weight_only_linear_cuda(x, weight(ebits, mbits, 64, ragged_k), torch.empty(64), None, ebits,
                                            mbits, backend=backend, config=config)  # fmt: skip
    for ebits, mbits in formats:
        for dtype in (torch.bfloat16, torch.float16):
            d.dequantize_weight(weight(ebits, mbits, 64, 1000), torch.empty(64), 1000, ebits, mbits, dtype)
    if torch.cuda.get_device_capability() == (9, 0):
        _gluon_float_weight(weight)


def _gluon_float_weight(weight):
    # The Gluon kernel itself (sm_90): every config, fp4 / fp6, both x dtypes, split and unsplit K, with and without
    # bias, launched directly (on CPU stand-ins a plan launches its traced Triton plan, as a trace would).
    import lowbit_flex.kernels.float_weight_dispatch as d
    from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS

    for config in GLUON_CONFIGS:
        for ebits, mbits in ((3, 2), (2, 3), (2, 1)):
            for m, n, k, dtype, bias in ((200, 512, 1024, torch.bfloat16, True), (64, 64, 4096, torch.float16, False)):
                x, w, s = torch.empty(m, k, dtype=dtype), weight(ebits, mbits, n, k), torch.empty(n)
                b = torch.empty(n, dtype=dtype) if bias else None
                route = d._route_for(x, w, b, ebits, mbits, d.Backend.GLUON, config)
                launch = route.plan.launch
                assert launch.kernel.fn.__name__ == "_float_weight_gemm_sm90", launch.kernel
                out = torch.empty(m, n, dtype=dtype)
                part = torch.empty(route.plan.splits, m, n) if route.plan.splits > 1 else out
                launch.kernel[launch.grid](*d._launch_args(route, x, w, s, b, out, part), **launch.meta)


def case_s8s4_decode():
    from dataclasses import replace

    from lowbit_flex.kernels.s8s4_decode import DECODE_CONFIGS, s8s4_decode_triton

    # Every config is forced explicitly: the dispatch table picks them per M, not the launcher.
    N, K = 256, 1024
    w, bias = torch.empty(N, K // 2, dtype=torch.int8), torch.empty(N)
    per_channel, groupwise = torch.empty(N), torch.empty(N, K // 128)
    for cfg in DECODE_CONFIGS.values():
        M = 16
        x, x_scale = torch.empty(M, K, dtype=torch.int8), torch.empty(M)
        xf = torch.empty(M, K, dtype=torch.bfloat16)
        # Unfused, per channel, bias, bf16, auto split-K (4 "SMs" on CPU tensors: N tiles alone are too few).
        s8s4_decode_triton(x, x_scale, w, per_channel, bias, torch.bfloat16, cfg)
        # Fused quantization, group-wise, no bias, fp16, no split.
        s8s4_decode_triton(xf, None, w, groupwise, None, torch.float16, replace(cfg, split_k=1))
        # Fused from fp16 and float32 x, split, bias; group size 32 (MMA configs: BLOCK_K = 32 interleaves).
        for dtype in (torch.float16, torch.float32):
            s8s4_decode_triton(xf.to(dtype), None, w, torch.empty(N, K // 32), bias, torch.bfloat16, cfg)
        # Unfused, group-wise, bias, no split; per channel with K = 96 (BLOCK_K = 32), fp16, split.
        s8s4_decode_triton(x, x_scale, w, groupwise, bias, torch.bfloat16, replace(cfg, split_k=1))
        x96, w96 = torch.empty(M, 96, dtype=torch.int8), torch.empty(N, 48, dtype=torch.int8)
        s8s4_decode_triton(x96, x_scale, w96, per_channel, None, torch.float16, cfg)


def case_s8s4_gemv():
    from dataclasses import replace

    from lowbit_flex.kernels.s8s4_gemv import GEMV_CONFIGS, s8s4_gemv_triton

    # Every config forced (the dispatch table picks them per M), at M = 1 and M = 4 (the row tiles it compiles).
    N, K = 256, 4096
    w, bias = torch.empty(N, K // 2, dtype=torch.int8), torch.empty(N)
    per_channel, g128, g2048 = torch.empty(N), torch.empty(N, K // 128), torch.empty(N, 2)
    for cfg in GEMV_CONFIGS.values():
        for M in (1, 4):
            x, x_scale = torch.empty(M, K, dtype=torch.int8), torch.empty(M)
            xf = torch.empty(M, K, dtype=torch.bfloat16)
            # int8 x, per channel, bias, bf16, auto split (4 "SMs" on CPU tensors: N tiles alone are too few).
            s8s4_gemv_triton(x, x_scale, w, per_channel, bias, torch.bfloat16, cfg)
            # Fused quantization, group 128 (steps spanning groups: per-word scales), no split, fp16, no bias.
            s8s4_gemv_triton(xf, None, w, g128, None, torch.float16, replace(cfg, split_k=1))
            # Fused, steps inside one group (one scale per row and step), bias, no split.
            s8s4_gemv_triton(xf, None, w, g2048, bias, torch.bfloat16, replace(cfg, split_k=1))
            # int8 x, per channel, no split.
            s8s4_gemv_triton(x, x_scale, w, per_channel, bias, torch.bfloat16, replace(cfg, split_k=1))
        for dtype in (torch.float16, torch.float32):  # fused from the other float inputs
            s8s4_gemv_triton(torch.empty(1, K, dtype=dtype), None, w, per_channel, bias, torch.bfloat16, cfg)
        # K = 11008 (Llama 2's down projection): a partial last block, per channel and group 128 (masked scales).
        kt = 11008
        xt, wt = torch.empty(1, kt, dtype=torch.bfloat16), torch.empty(N, kt // 2, dtype=torch.int8)
        s8s4_gemv_triton(xt, None, wt, per_channel, None, torch.bfloat16, replace(cfg, split_k=1))
        s8s4_gemv_triton(xt, None, wt, torch.empty(N, kt // 128), bias, torch.bfloat16, replace(cfg, split_k=1))
