"""Static instruction counts of the loops that issue WGMMAs, per kernel of a CUDA object or library (no GPU needed).

    python -m benchmarks.sass_mainloop build/obj/s8s4_gemm_sm90_mult_bf16.o [--cuobjdump PATH]

Disassembles with ``cuobjdump -sass`` and, for every kernel, prints each loop (a backward branch and the
instructions from its target to it) that contains WGMMA instructions (``HGMMA`` / ``IGMMA`` / ``QGMMA``), innermost
first by size, with its instruction count, the most frequent opcodes and their count per execution pipe. A main
loop's count against the number of WGMMAs it issues says how many issue slots the tensor-core work leaves to the rest
(``docs/s8s4_cutlass.md`` uses it to compare upcasts before a GPU is available). The pipe counts matter for decode
loops: integer logic, shifts and permutes run on the ALU pipe at half the issue rate (64 per clock per SM on sm_90),
so the ALU pipe can hold a weight decode back with issue slots to spare (ncu, session 63's
docs/measurements/h100_run63_weight_only_profile_rings.md: the fp4 WGMMA GEMM's ALU pipe busy 46 % of active cycles,
84 of its 204 instructions per K tile and warp).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys

_INSTR = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_BRANCH_TARGET = re.compile(r"\bBRA\b.*?0x([0-9a-f]+)")
_WGMMA = ("HGMMA", "IGMMA", "QGMMA")
MMA_SYNC = ("HMMA", "IMMA")  # mma.sync: the decode GEMVs' loops (--mma-sync)
# In a mangled CUTLASS kernel name: the mainloop policy (a length-prefixed identifier) with its stage count, and
# the MMA atom (its shape is the warp group's tile). c++filt gives up on names this long.
_POLICY = re.compile(r"(\d+)(Mainloop\w*)")
_ATOM = re.compile(r"\d+(MMA_\d+x\d+x\d+_\w+?)E")


def label(mangled: str) -> str:
    """A short name for a CUTLASS kernel: mainloop policy, stages, MMA atom (else the name's first 120 chars)."""
    atom = _ATOM.search(mangled)
    for m in _POLICY.finditer(mangled):
        policy = m.group(2)[: int(m.group(1))]
        stages = re.match(r"ILi(\d+)E", mangled[m.start(2) + len(policy) :])
        if atom and stages and len(policy) == int(m.group(1)):
            return f"{policy}, {stages.group(1)} stages, {atom.group(1)}"
    return mangled[:120]


# The execution pipe of an opcode, as ncu names them (the opcodes these loops use; anything else is "other").
# `alu`: integer logic, shifts, permutes, compares, adds (half issue rate); `fma`: fp32 and integer multiply-adds
# (IMAD at half rate, on the heavy half of the pipe); `fp16`: packed half / bf16 arithmetic; `uniform`: the U*
# datapath (one value per warp); `tensor`: WGMMAs and their fences; `lsu`: loads and stores.
PIPES: dict[str, tuple[str, ...]] = {
    "alu": ("LOP3", "LOP", "SHF", "PRMT", "ISETP", "IADD3", "VIADD", "LEA", "SEL", "PLOP3", "IMNMX", "BMSK", "SGXT",
            "FSETP", "FSEL", "FMNMX", "P2R", "R2P"),
    "fma": ("FFMA", "FMUL", "FADD", "IMAD", "IMUL"),
    "fp16": ("HFMA2", "HMUL2", "HADD2", "HMNMX2"),
    "tensor": ("HGMMA", "IGMMA", "QGMMA", "WARPGROUP", "HMMA", "IMMA"),
    "lsu": ("LDS", "STS", "LDG", "STG", "LDSM", "LD", "ST", "LDL", "STL"),
}  # fmt: skip
_PIPE_OF = {op: pipe for pipe, ops in PIPES.items() for op in ops}


def pipe(op: str) -> str:
    """The pipe an opcode (as :func:`opcode` returns it) issues to: a key of :data:`PIPES`, ``uniform`` or
    ``other``."""
    if op in _PIPE_OF:
        return _PIPE_OF[op]
    return "uniform" if op.startswith("U") or op == "R2UR" else "other"


def pipe_counts(ops: collections.Counter) -> collections.Counter:
    """Instructions per pipe of an opcode count."""
    counts = collections.Counter()
    for op, n in ops.items():
        counts[pipe(op)] += n
    return counts


def opcode(instr: str) -> str:
    """The opcode without its predicate guard and modifiers: ``@!P0 IMAD.WIDE ...`` -> ``IMAD``."""
    words = instr.split()
    word = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
    return word.split(".")[0]


def wgmma_loops(sass: str, mma_ops: tuple[str, ...] = _WGMMA) -> list[tuple[str, int, int, collections.Counter]]:
    """(kernel name, instructions, MMAs, opcode counts) of each loop that issues MMAs of ``mma_ops`` (WGMMAs by
    default)."""
    loops = []
    for block in re.split(r"\n\s*Function : ", sass)[1:]:
        name = block.split("\n", 1)[0].strip()
        instrs = [(int(m.group(1), 16), m.group(2)) for m in map(_INSTR.match, block.split("\n")) if m]
        index = {address: i for i, (address, _) in enumerate(instrs)}
        for i, (address, instr) in enumerate(instrs):
            branch = _BRANCH_TARGET.search(instr)
            if not branch or int(branch.group(1), 16) >= address or int(branch.group(1), 16) not in index:
                continue
            ops = collections.Counter(opcode(text) for _, text in instrs[index[int(branch.group(1), 16)] : i + 1])
            wgmmas = sum(ops[w] for w in mma_ops)
            if wgmmas:
                loops.append((name, sum(ops.values()), wgmmas, ops))
    return loops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("binary", help="a .o, .cubin or .so with sm_90a SASS")
    parser.add_argument("--cuobjdump", default=shutil.which("cuobjdump") or "cuobjdump")
    parser.add_argument("--mma-sync", action="store_true", help="loops that issue mma.sync (HMMA / IMMA) instead")
    args = parser.parse_args(argv)
    sass = subprocess.run([args.cuobjdump, "-sass", args.binary], check=True, capture_output=True, text=True).stdout
    kind = "mma.syncs" if args.mma_sync else "WGMMAs"
    loops = wgmma_loops(sass, MMA_SYNC if args.mma_sync else _WGMMA)
    if not loops:
        sys.exit(f"no loop with {kind} in {args.binary}")
    for name, count, mmas, ops in sorted(loops, key=lambda loop: (loop[0], loop[1])):
        common = ", ".join(f"{op} {n}" for op, n in ops.most_common(10))
        pipes = ", ".join(f"{p} {n}" for p, n in pipe_counts(ops).most_common())
        print(f"{label(name)}\n  {count} instructions, {mmas} {kind}: {common}\n  by pipe: {pipes}")


if __name__ == "__main__":
    main()
