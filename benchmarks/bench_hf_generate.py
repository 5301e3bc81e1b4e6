"""Hugging Face ``generate`` on a Llama-2-7B-shaped model (random weights, batch 1, static KV cache): bf16 vs W4A8
per channel and group 128, each quantized while loading (``from_pretrained(..., quantization_config=LowbitConfig(
W4A8Config(...)))``), with the decode step under ``torch.compile(mode="reduce-overhead", fullgraph=True)`` (CUDA
graphs) and eagerly.

Issue 16 (HF models through ``from_pretrained`` run ``generate``, tokens/s against bf16) and issue 10 (decode
tokens/s: >= 2.0x bf16 with group 128, >= 2.2x per channel). The float checkpoint is written once (bf16 safetensors,
13.5 GB, in ``/dev/shm`` when it has room) and every model is loaded from it. The compile follows transformers'
own path: ``generate`` compiles the one-token forward (``CompileConfig``) when the cache is static; the prefill
runs eagerly. The cache is one ``StaticCache`` per model, reset before each call: a new cache would move its
tensors and make the CUDA graphs re-record on every call.

Per model: load seconds (quantization included), compile + warm-up seconds, peak GPU memory, end-to-end
``generate`` tokens/s, decode tokens/s ((N - 1) / (time of N tokens - time of 1 token): the prefill cancels), eager
tokens/s if time allows. A model that fails gets its error in the table; the run stays within ``BUDGET_S``.
``compare`` runs the same code on a tiny config on CPU (``tests/benchmarks/test_bench_hf_generate.py``).
"""

from __future__ import annotations

import collections
import gc
import importlib.util
import inspect
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import torch

from benchmarks.harness import Bench
from lowbit_flex.nn import QuantizedModule, W4A8Config

LLAMA2_7B = dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
    vocab_size=32000, max_position_embeddings=4096,
)  # fmt: skip
TINY = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
    vocab_size=128, max_position_embeddings=64,
)  # fmt: skip
# None: the bf16 model (the baseline). lm_head stays bf16 in the quantized models (LowbitConfig's default).
CONFIGS = {"bf16": None, "w4a8": W4A8Config(), "w4a8 g128": W4A8Config(group_size=128)}
PROMPT_LEN = 8  # <= 16 rows: the prefill takes W4A8's decode kernels too
# The whole module, on the GPU: it must end within ~5 minutes. A model is started only if the previous one's time
# still fits; $LOWBIT_BENCH_HF_BUDGET_S overrides.
BUDGET_S = float(os.environ.get("LOWBIT_BENCH_HF_BUDGET_S", 280))
# $LOWBIT_BENCH_HF_CONFIGS picks models by name, comma-separated (e.g. "bf16,w4a8 g128": a run that split the work).
_ENV_CONFIGS = "LOWBIT_BENCH_HF_CONFIGS"
_EAGER_TOKENS = 8


def _log(msg: str, start: float) -> None:
    print(f"  [{time.strftime('%H:%M:%S')} +{time.monotonic() - start:.0f}s] {msg}", flush=True)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _free(device: str) -> None:
    gc.collect()  # the model and its compiled call refer to each other
    torch._dynamo.reset()  # drops the compiled code and the CUDA graphs (they hold the model's memory pool)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def _scratch_dir(nbytes: int) -> str | None:
    """``/dev/shm`` (RAM) when it holds twice the checkpoint, else the default temporary directory."""
    try:
        return "/dev/shm" if shutil.disk_usage("/dev/shm").free > 2 * nbytes else None
    except OSError:
        return None


def save_random_llama(config_kwargs: dict, device: str, path: str) -> None:
    """Random bf16 weights (transformers' own init, seeded), built on ``device`` (no float32 CPU copy of 7B)."""
    import transformers

    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**config_kwargs))
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(path)


def _load(path: str, quant, device: str):
    from transformers import AutoModelForCausalLM

    from lowbit_flex.hf import LowbitConfig

    kwargs: dict = {"dtype": torch.bfloat16}
    if quant is not None:
        kwargs["quantization_config"] = LowbitConfig(quant)
    accelerate = importlib.util.find_spec("accelerate") is not None
    if device != "cpu" and accelerate:
        kwargs["device_map"] = device  # quantizes each layer on the GPU as it is read
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device != "cpu" and not accelerate:  # transformers wants accelerate for a device_map: load on CPU, move
        model = model.to(device)
    return model.eval()


def _lowbit_modules(model) -> dict[str, int]:
    """What quantizing on load built: ``{"W4A8Linear g128": 224}``."""
    kinds = collections.Counter()
    for m in model.modules():
        if isinstance(m, QuantizedModule):
            g = getattr(m, "group_size", None)
            kinds[type(m).__name__ + ("" if g is None else f" g{g}")] += 1
    return dict(kinds)


def _fmt_modules(kinds: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{n}" for k, n in kinds.items()) or "none"


def measure(
    path: str, quant, device: str, prompt: torch.Tensor, n_new: int, compile: bool, *, repeats: int = 3,
    eager: Callable[[], bool] = lambda: True, log: Callable[[str], None] = print,
) -> dict:  # fmt: skip
    """Load one model from ``path`` and time ``generate`` on it; see the module docstring for the keys."""
    from transformers import CompileConfig, StaticCache

    r: dict = {}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = _load(path, quant, device)
    _sync(device)
    r["load s"] = time.perf_counter() - t0
    r["lowbit modules"] = _lowbit_modules(model)
    log(f"loaded in {r['load s']:.1f} s, lowbit modules: {_fmt_modules(r['lowbit modules'])}")
    with torch.no_grad():
        r["logits"] = model(prompt).logits[0].float().cpu()  # the prefill's logits, compared with bf16's below

    cache = StaticCache(config=model.config, max_cache_len=prompt.shape[1] + max(n_new, _EAGER_TOKENS))
    compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
    compile_config._compile_all_devices = device != "cuda"  # transformers compiles on CUDA only unless told to
    # transformers 5.2x renamed generate's past_key_values to cache (the old name warns)
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def generate(n: int, compiled: bool = compile) -> tuple[torch.Tensor, float]:
        cache.reset()
        _sync(device)
        t = time.perf_counter()
        out = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n, do_sample=False,
            pad_token_id=0, compile_config=compile_config, disable_compile=not compiled, **{cache_arg: cache},
        )  # fmt: skip
        _sync(device)
        return out, time.perf_counter() - t

    counters = torch._dynamo.utils.counters
    graphs, skips = counters["stats"]["unique_graphs"], counters["inductor"]["cudagraph_skips"]
    t0 = time.perf_counter()
    try:
        generate(n_new)  # compile, then CUDA-graph warm-up and capture, outside the timing
    except torch._dynamo.exc.Unsupported as e:  # a graph break: compile the pieces rather than lose the model
        log(f"fullgraph=True failed, compiling with fullgraph=False: {str(e).splitlines()[0][:200]}")
        compile_config = CompileConfig(fullgraph=False, mode="reduce-overhead")  # a new config: a new compile
        compile_config._compile_all_devices = device != "cuda"
        r["fullgraph"] = False
        generate(n_new)
    generate(n_new)
    r["warm-up s"] = time.perf_counter() - t0
    log(f"compile + warm-up {r['warm-up s']:.1f} s")
    runs = [generate(n_new) for _ in range(repeats)]
    r["tokens"] = runs[0][0].cpu()
    t_n = statistics.median(t for _, t in runs)
    t_1 = statistics.median(generate(1)[1] for _ in range(repeats))
    r["tok/s"] = n_new / t_n
    r["decode tok/s"] = (n_new - 1) / (t_n - t_1) if t_n > t_1 else math.nan
    if compile:  # more than one: something in the decode step recompiled (the limit is patched to 8 in compare)
        r["graphs"] = counters["stats"]["unique_graphs"] - graphs
    if compile and device == "cuda":  # > 0: a graph ran compiled but without CUDA graphs (the log says why)
        r["cudagraph skips"] = counters["inductor"]["cudagraph_skips"] - skips
    log(f"generate {r['tok/s']:.1f} tok/s, decode {r['decode tok/s']:.1f} tok/s")
    if compile and eager():
        generate(2, compiled=False)  # the eager path's first launches (Triton JIT) outside the timing
        r["eager tok/s"] = _EAGER_TOKENS / generate(_EAGER_TOKENS, compiled=False)[1]
        log(f"eager {r['eager tok/s']:.1f} tok/s")
    if device == "cuda":
        r["peak GiB"] = torch.cuda.max_memory_allocated() / 2**30
    return r


def compare(
    config_kwargs: dict, device: str, n_new: int, compile: bool, configs: dict | None = None, *,
    repeats: int = 3, deadline: float | None = None,
) -> dict[str, dict]:  # fmt: skip
    """Save a random Llama with ``config_kwargs`` and run :func:`measure` on each of ``configs`` (name -> lowbit
    config, None for bf16; default :data:`CONFIGS`). A model that fails gets ``{"error": ...}``; past ``deadline``
    (``time.monotonic()``), models whose estimated time no longer fits are skipped and eager timing is dropped."""
    configs = CONFIGS if configs is None else configs
    start = time.monotonic()
    log = lambda msg: _log(msg, start)
    d = config_kwargs
    n_params = d["vocab_size"] * d["hidden_size"] * 2 + d["num_hidden_layers"] * (
        4 * d["hidden_size"] ** 2 + 3 * d["hidden_size"] * d["intermediate_size"]
    )
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(dir=_scratch_dir(2 * n_params)) as path:
        log(f"saving a random {n_params / 1e9:.2f}B-parameter Llama to {path}")
        save_random_llama(config_kwargs, device, path)
        _free(device)
        log("saved")
        gen = torch.Generator().manual_seed(1)
        prompt = torch.randint(3, d["vocab_size"], (1, PROMPT_LEN), generator=gen).to(device)  # 0-2: special ids
        last = 0.0  # seconds the previous model took: the first one also pays for one-time set-up
        for name, quant in configs.items():
            t0 = time.monotonic()
            if deadline is not None and results and t0 + 1.1 * last > deadline:
                results[name] = {"error": f"skipped: {deadline - t0:.0f} s left, the last model took {last:.0f} s"}
                log(f"{name}: {results[name]['error']}")
                continue
            log(f"{name}: loading")
            eager = lambda: deadline is None or time.monotonic() + 20 < deadline
            try:
                with torch._dynamo.config.patch(recompile_limit=8):
                    results[name] = measure(path, quant, device, prompt, n_new, compile, repeats=repeats,
                                            eager=eager, log=lambda msg, n=name: log(f"{n}: {msg}"))  # fmt: skip
                summary = {k: v for k, v in results[name].items() if isinstance(v, (int, float))}
                log(f"{name}: {', '.join(f'{k} {v:.4g}' for k, v in summary.items())}")  # if the run dies after
            except Exception as e:  # one model failing must not lose the others' numbers
                results[name] = {"error": f"{type(e).__name__}: {e}"[:400]}
                log(f"{name}: FAILED {results[name]['error']}")
            _free(device)
            last = time.monotonic() - t0
    base = results.get("bf16", {})
    for r in results.values():
        if "tokens" in r and "tokens" in base:
            # Random weights give near-flat logits, so greedy tokens diverge quickly: informational only.
            r["same tokens"] = float((r["tokens"] == base["tokens"]).float()[:, PROMPT_LEN:].mean())
            r["logits rel. err"] = float((r["logits"] - base["logits"]).norm() / base["logits"].norm())
    return results


def run(bench: Bench) -> None:
    if importlib.util.find_spec("transformers") is None:
        print("transformers is not installed: skipping the HF generate benchmark")
        return
    deadline = time.monotonic() + BUDGET_S
    n_new = 16 if bench.quick else 64
    names = os.environ.get(_ENV_CONFIGS)
    configs = {n: CONFIGS[n] for n in names.split(",")} if names else None
    results = compare(LLAMA2_7B, "cuda", n_new, compile=True, configs=configs, deadline=deadline)
    modes = [
        ("generate, CUDA graphs", "tok/s", n_new),
        ("decode step, CUDA graphs", "decode tok/s", n_new),
        ("generate, eager", "eager tok/s", _EAGER_TOKENS),
    ]
    table = bench.table("HF Llama-2-7B-shaped generate, batch 1 (ms per token)", baseline="bf16")
    for mode, key, tokens in modes:
        times = {name: 1e3 / r[key] for name, r in results.items() if r.get(key, 0) > 0}
        if not times:  # e.g. eager timing skipped for time
            continue
        times.setdefault("bf16", math.nan)  # the baseline failed: ratios read nan, the other times still show
        table.add({"mode": mode, "tokens": tokens}, times, **{f"{n} tok/s": r.get(key) for n, r in results.items()})
    details = bench.table("HF Llama-2-7B-shaped: each model (ms per token, CUDA graphs)", baseline="bf16")
    bf16_ms = 1e3 / results["bf16"]["tok/s"] if "tok/s" in results["bf16"] else math.nan
    keys = ("load s", "warm-up s", "peak GiB", "lowbit modules", "graphs", "fullgraph", "cudagraph skips",
            "logits rel. err", "same tokens", "error")  # fmt: skip
    for name, r in results.items():
        times = {"bf16": bf16_ms} | ({name: 1e3 / r["tok/s"]} if "tok/s" in r else {})
        extra = {k: r.get(k) for k in keys}
        if "lowbit modules" in r:
            extra["lowbit modules"] = _fmt_modules(r["lowbit modules"])
        details.add({"model": name}, times, **extra)
