"""benchmarks/sass_mainloop.py on a hand-written SASS listing: which loops it reports and what it counts."""

from benchmarks.sass_mainloop import MMA_SYNC, PIPES, label, opcode, pipe, pipe_counts, wgmma_loops

# Two kernels: the first has an inner loop with two WGMMAs (0x0020-0x0070) inside an outer loop (0x0010-0x0090),
# and a loop without WGMMAs (0x00a0-0x00b0); the second has a forward branch only.
_SASS = """
	code for sm_90a
		Function : _ZN7cutlass13device_kernelI17MainloopSm90FancyILi5EE27MMA_64x256x32_S32S8S8_RS_TNEE
	.headerflags	@"EF_CUDA_SM90"
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   IMAD.MOV.U32 R2, RZ, RZ, R3 ;
        /*0020*/              @!P0 LOP3.LUT R4, R5, 0xf0f0f0f, RZ, 0xc0, !PT ;
        /*0030*/                   PRMT R6, R4, 0x5140, R7 ;
        /*0040*/                   IGMMA.64x256x32.S8.S8 R24, R8, gdesc[UR4], RZ, !UPT ;
        /*0050*/                   IMAD R6, R6, R9, R10 ;
        /*0060*/                   IGMMA.64x256x32.S8.S8 R24, R12, gdesc[UR8], R24 ;
        /*0070*/               @P1 BRA `(.L_x_1) 0x20 ;
        /*0080*/                   FFMA R11, R12, R13, R14 ;
        /*0090*/               @P2 BRA `(.L_x_0) 0x10 ;
        /*00a0*/                   IADD3 R1, R1, 0x1, RZ ;
        /*00b0*/               @P3 BRA `(.L_x_2) 0xa0 ;
        /*00c0*/                   EXIT ;
		Function : _Z6simplev
        /*0000*/                   HGMMA.64x128x16.F32.BF16 R24, R8, gdesc[UR4], RZ ;
        /*0010*/                   BRA `(.L_x_3) 0x30 ;
        /*0020*/                   NOP ;
        /*0030*/                   EXIT ;
"""


def test_opcode_drops_guard_and_modifiers():
    assert opcode("@!P0 LOP3.LUT R4, R5, 0xf0f0f0f, RZ, 0xc0, !PT") == "LOP3"
    assert opcode("IGMMA.64x256x32.S8.S8 R24, R8, gdesc[UR4], RZ, !UPT") == "IGMMA"
    assert opcode("@P1 BRA `(.L_x_1) 0x20") == "BRA"


def test_reports_each_loop_with_wgmmas_and_counts_it():
    loops = sorted((count, wgmmas, dict(ops)) for _, count, wgmmas, ops in wgmma_loops(_SASS))
    inner = {"LOP3": 1, "PRMT": 1, "IGMMA": 2, "IMAD": 1, "BRA": 1}
    outer = {**inner, "IMAD": 2, "FFMA": 1, "BRA": 2}
    assert loops == [(6, 2, inner), (9, 2, outer)]


def test_label_names_policy_stages_and_atom():
    name = "_ZN7cutlass13device_kernelI17MainloopSm90FancyILi5EE27MMA_64x256x32_S32S8S8_RS_TNEE"
    assert label(name) == "MainloopSm90Fancy, 5 stages, MMA_64x256x32_S32S8S8_RS_TN"
    assert label("_Z6simplev") == "_Z6simplev"


def test_pipe_counts_of_the_inner_loop():
    # LOP3 and PRMT on the ALU pipe, IMAD on the FMA pipe, the WGMMAs on the tensor pipe, the branch elsewhere
    inner = next(ops for _, count, _, ops in wgmma_loops(_SASS) if count == 6)
    assert pipe_counts(inner) == {"alu": 2, "fma": 1, "tensor": 2, "other": 1}
    assert pipe("UIADD3") == pipe("R2UR") == "uniform" and pipe("HMUL2") == "fp16" and pipe("NOP") == "other"
    assert len({op for ops in PIPES.values() for op in ops}) == sum(map(len, PIPES.values()))  # one pipe per opcode


def test_mma_sync_loops_instead_of_wgmma_loops():
    # --mma-sync: a decode GEMV's loop (HMMA, no WGMMA) is reported, the WGMMA loops are not
    sass = """
		Function : _Z4gemvv
        /*0000*/                   LDS.128 R4, [R2] ;
        /*0010*/                   PRMT R8, R4, 0x9180, RZ ;
        /*0020*/                   HMMA.16816.F32.BF16 R12, R8, R16, R12 ;
        /*0030*/               @P0 BRA `(.L_x_0) 0x0 ;
        /*0040*/                   EXIT ;
"""
    assert [(count, mmas, dict(ops)) for _, count, mmas, ops in wgmma_loops(sass, MMA_SYNC)] == [
        (4, 1, {"LDS": 1, "PRMT": 1, "HMMA": 1, "BRA": 1})
    ]
    assert wgmma_loops(sass) == [] and wgmma_loops(_SASS, MMA_SYNC) == []
    assert pipe("HMMA") == "tensor"
