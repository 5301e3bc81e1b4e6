"""Llama-style decoding with a static KV cache: bf16 vs W4A8 (``quantize_(model, W4A8Config())``) and the weight-only
fp8 / fp6 / fp4 configs (``--weight-only``), tokens/s.

Random weights with Llama-2-7B dimensions (no downloads); on a GPU the one-token decode step runs under
``torch.compile(mode="reduce-overhead")`` (CUDA graphs), or with ``--cuda-graphs`` captured as one CUDA graph without
compiling (the ops' eager paths, seconds to set up where compiling five 32-layer models takes minutes). ``--tiny``
runs a two-layer model on CPU in seconds.

As in gpt-fast, the static KV cache holds the prompt and the generated tokens (rounded up to 64), and the decode loop
never waits for the GPU: the position lives on the device and is advanced there. A 2048-long cache would make every
step read 2 x 32 layers x 2048 x 4096 bf16 values (1 GiB) of K/V through the masked attention in both models, and
a position copied from the host each step (pageable memory) synchronizes the stream every token.

    python examples/llama_w4a8_decode.py                # Llama-2-7B dims on CUDA
    python examples/llama_w4a8_decode.py --tiny         # smoke test (CPU)
    python examples/llama_w4a8_decode.py --group-sizes 128 --weight-only fp8 fp6 fp4
    python examples/llama_w4a8_decode.py --cuda-graphs --weight-only fp8 fp6 fp4
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

import lowbit_flex
from lowbit_flex import W4A8Config
from lowbit_flex.nn import FP8WeightOnlyConfig, FPxWeightOnlyConfig


@dataclass(frozen=True)
class ModelArgs:
    n_layer: int = 32
    dim: int = 4096
    n_head: int = 32
    ffn_dim: int = 11008
    vocab_size: int = 32000
    max_seq_len: int = 2048
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head


LLAMA2_7B = ModelArgs()
TINY = ModelArgs(n_layer=2, dim=128, n_head=4, ffn_dim=352, vocab_size=512, max_seq_len=128)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class KVCache(nn.Module):
    """Static cache: fixed shapes, so the decode step is one CUDA graph."""

    def __init__(self, batch: int, args: ModelArgs, dtype: torch.dtype):
        super().__init__()
        shape = (batch, args.n_head, args.max_seq_len, args.head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype))
        self.register_buffer("v", torch.zeros(shape, dtype=dtype))

    def update(self, pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k.index_copy_(2, pos, k)
        self.v.index_copy_(2, pos, v)
        return self.k, self.v


def rope_table(length: int, head_dim: int, base: float, device=None) -> torch.Tensor:
    """``(length, head_dim // 2, 2)`` float32: the cosine and sine of each position's rotation per frequency.
    Real, not complex: Inductor generates no code for complex ops (it falls back to eager kernels) and
    AOTInductor packages none of them."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.outer(torch.arange(length, device=device).float(), inv)
    return torch.stack((angles.cos(), angles.sin()), dim=-1)


def _rope(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Rotary embedding; ``x`` (B, T, H, D), ``freqs`` (T, D // 2, 2) from :func:`rope_table`: each pair
    ``(x0, x1)`` times ``cos + i sin``, in real arithmetic."""
    x0, x1 = x.float().reshape(*x.shape[:-1], -1, 2).unbind(-1)
    cos, sin = freqs[None, :, None, :, 0], freqs[None, :, None, :, 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(3).type_as(x)


class Block(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.wqkv = nn.Linear(args.dim, 3 * args.dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)
        self.w1 = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w3 = nn.Linear(args.dim, args.ffn_dim, bias=False)
        self.w2 = nn.Linear(args.ffn_dim, args.dim, bias=False)
        self.attn_norm, self.ffn_norm = RMSNorm(args.dim), RMSNorm(args.dim)
        self.cache: KVCache | None = None

    def forward(self, x: torch.Tensor, pos: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, D = self.args.n_head, self.args.head_dim
        q, k, v = self.wqkv(self.attn_norm(x)).view(B, T, 3, H, D).unbind(2)
        q, k = _rope(q, freqs), _rope(k, freqs)
        k, v = self.cache.update(pos, k.transpose(1, 2), v.transpose(1, 2))
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=mask)
        x = x + self.wo(y.transpose(1, 2).reshape(B, T, -1))
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(args) for _ in range(args.n_layer))
        self.norm = RMSNorm(args.dim)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)

    def setup_caches(self, batch: int, max_seq_len: int | None = None) -> None:
        """Static caches for ``max_seq_len`` positions (default: the model's ``max_seq_len``)."""
        # The activation dtype is the embedding's: the linear layers may hold quantized (int8, fp8) weights.
        emb, a = self.tok_embeddings.weight, self.args
        dtype, device = emb.dtype, emb.device
        length = min(max_seq_len or a.max_seq_len, a.max_seq_len)
        cache_args = replace(a, max_seq_len=length)
        for layer in self.layers:
            layer.cache = KVCache(batch, cache_args, dtype).to(device)
        freqs = rope_table(length, a.head_dim, a.rope_base, device)
        self.register_buffer("freqs", freqs, persistent=False)
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, idx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(idx)
        freqs, mask = self.freqs[pos], self.causal[None, None, pos]
        for layer in self.layers:
            x = layer(x, pos, freqs, mask)
        return self.output(self.norm(x)).float()


def build_model(args: ModelArgs, device: str, dtype: torch.dtype = torch.bfloat16) -> Transformer:
    """Random weights, created directly on ``device`` in ``dtype`` (no float32 copy of a 7B model)."""
    torch.manual_seed(0)
    with torch.device(device):
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            model = Transformer(args)
        finally:
            torch.set_default_dtype(default)
    return model.eval()


def decode_one_token(model: Transformer, tok: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    return model(tok, pos)[:, -1].argmax(-1, keepdim=True)


@torch.no_grad()
def generate(model: Transformer, prompt: torch.Tensor, n_new: int, step) -> tuple[torch.Tensor, float]:
    """Greedy decoding: prefill eagerly, then ``n_new`` calls of ``step``. Returns (tokens, decode seconds)."""
    T = prompt.shape[1]
    tok = decode_one_token(model, prompt, torch.arange(T, device=prompt.device))
    out = [tok]
    pos = torch.tensor([T], device=prompt.device)  # advanced on the device: no host copy (and sync) per token
    if prompt.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n_new - 1):
        # clone: under CUDA graphs the step's output buffer is overwritten by the next replay.
        tok = step(model, tok, pos).clone()
        out.append(tok)
        pos += 1
    if prompt.is_cuda:
        torch.cuda.synchronize()
    return torch.cat([prompt, *out], dim=1), time.perf_counter() - t0


def cuda_graph_step(model: Transformer, pos: torch.Tensor):
    """``decode_one_token`` captured once as a CUDA graph, without compiling: a step copies its token and position
    into the graph's inputs (two small device copies, no sync) and replays it. Two eager calls on a side stream
    first bind every op's eager path, so the capture records kernel launches only."""
    static_tok, static_pos = torch.zeros(1, 1, dtype=torch.long, device=pos.device), pos.clone()
    side = torch.cuda.Stream(pos.device)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            decode_one_token(model, static_tok, static_pos)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = decode_one_token(model, static_tok, static_pos)

    def step(_model: Transformer, tok: torch.Tensor, pos_: torch.Tensor) -> torch.Tensor:
        static_tok.copy_(tok)
        static_pos.copy_(pos_)
        graph.replay()
        return static_out

    return step


def tokens_per_s(
    model: Transformer, args: ModelArgs, device: str, n_new: int, compile: bool, graphs: bool = False
) -> tuple[float, torch.Tensor]:
    """Warm up (compile, capture CUDA graphs), then time ``n_new`` decoded tokens for batch 1. The cache holds the
    8-token prompt and the new tokens, rounded up to 64 positions. ``graphs``: the step as one CUDA graph
    (:func:`cuda_graph_step`) instead of compiled."""
    model.setup_caches(batch=1, max_seq_len=-(-(8 + n_new) // 64) * 64)
    if graphs:
        with torch.no_grad():
            step = cuda_graph_step(model, torch.tensor([8], device=device))
    elif compile:
        step = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True)
    else:
        step = decode_one_token
    gen = torch.Generator().manual_seed(1)  # the same prompt for bf16 and W4A8
    prompt = torch.randint(0, args.vocab_size, (1, 8), generator=gen).to(device)
    generate(model, prompt, min(n_new, 8), step)  # warm-up
    tokens, seconds = generate(model, prompt, n_new, step)
    return (n_new - 1) / seconds, tokens


# Weight-only formats the example can compare (``--weight-only``): name -> quantize_ config.
WEIGHT_ONLY = {
    "fp8": FP8WeightOnlyConfig(),
    "fp6": FPxWeightOnlyConfig(3, 2),  # e3m2
    "fp4": FPxWeightOnlyConfig(2, 1),  # e2m1
}


def compare(
    args: ModelArgs,
    device: str,
    n_new: int,
    compile: bool,
    group_sizes: tuple[int | None, ...] = (None,),
    weight_only: tuple[str, ...] = (),
    graphs: bool = False,
) -> dict:
    """bf16, then for each group size (None: per channel) the same model quantized in place to W4A8, and for each
    ``weight_only`` format (:data:`WEIGHT_ONLY`) to that weight-only config (the bf16 weights of each layer are
    freed as it is quantized). Keys: ``bf16 tok/s`` and, per quantized model ``w4a8`` / ``w4a8 g<size>`` /
    ``fp8`` ..., ``<name> tok/s``, ``<name> speed-up`` and ``<name> same tokens``."""
    result: dict[str, float] = {}
    bf16_tokens = None
    runs = [("w4a8" if g is None else f"w4a8 g{g}", W4A8Config(g)) for g in group_sizes]
    runs += [(f, WEIGHT_ONLY[f]) for f in weight_only]
    for name, config in runs:
        model = build_model(args, device)  # seeded: the same weights each time
        if bf16_tokens is None:
            result["bf16 tok/s"], bf16_tokens = tokens_per_s(model, args, device, n_new, compile, graphs)
        lowbit_flex.quantize_(model, config)
        torch._dynamo.reset()  # a new model: recompile and re-capture
        tps, tokens = tokens_per_s(model, args, device, n_new, compile, graphs)
        result[f"{name} tok/s"], result[f"{name} speed-up"] = tps, tps / result["bf16 tok/s"]
        # Random weights give near-flat logits, so greedy tokens diverge quickly: informational only.
        result[f"{name} same tokens"] = float((bf16_tokens[:, 8:] == tokens[:, 8:]).float().mean())
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="two-layer model (CPU smoke test)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--group-sizes", type=int, nargs="*", default=[], help="W4A8 group sizes (always: per channel)")
    p.add_argument("--weight-only", nargs="*", default=[], choices=sorted(WEIGHT_ONLY), help="weight-only formats")
    p.add_argument("--no-compile", action="store_true", help="run eagerly (the default on CPU)")
    p.add_argument("--cuda-graphs", action="store_true", help="one CUDA graph per step, not compiled (CUDA)")
    a = p.parse_args()
    args = TINY if a.tiny else LLAMA2_7B
    groups = (None, *a.group_sizes)
    on_cuda = a.device == "cuda"
    result = compare(args, a.device, a.tokens, on_cuda and not a.no_compile and not a.cuda_graphs, groups,
                     tuple(a.weight_only), graphs=on_cuda and a.cuda_graphs)  # fmt: skip
    print(" | ".join(f"{k}: {v:.3g}" for k, v in result.items()))


if __name__ == "__main__":
    main()
