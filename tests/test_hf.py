"""``lowbit_flex.hf`` with transformers (the ``hf`` extra) on tiny random-weight Llama and ViT models: quantizing
while loading equals ``quantize_`` on the loaded float model bitwise, ``save_pretrained``/``from_pretrained`` round
trips are bitwise, quantized HF models survive dtype casts, and loading holds one float layer at a time."""

import ctypes
import json
import re
import weakref

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from lowbit_flex import hf  # noqa: E402  (after the importorskip)
from lowbit_flex.hf import LowbitConfig, LowbitHfQuantizer  # noqa: E402
from lowbit_flex.nn import (  # noqa: E402
    FP8WeightOnlyConfig,
    QuantizedModule,
    W4A8Config,
    quantize_,
)
from tests._configs import CONFIGS  # noqa: E402


def _llama(seed=0, **overrides):
    dims = dict(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
    dims.update(num_key_value_heads=2, max_position_embeddings=32, attention_bias=True, tie_word_embeddings=False)
    dims.update(overrides)
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**dims))


def _vit(seed=0):
    config = transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
        patch_size=8, num_labels=10,
    )  # fmt: skip
    torch.manual_seed(seed)
    return transformers.ViTForImageClassification(config)


def _randomise(model):
    """transformers initialises biases to zero and norms to one: every tensor random, so nothing passes on zeros."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model


_MODELS = {
    "llama": (lambda: _randomise(_llama()), transformers.AutoModelForCausalLM),
    "vit": (lambda: _randomise(_vit()), transformers.AutoModelForImageClassification),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One float32 checkpoint per model kind (float32 on disk, loaded as bf16 or float32 below)."""
    root = tmp_path_factory.mktemp("float")
    for kind, (build, _) in _MODELS.items():
        build().save_pretrained(root / kind)
    return root


def _inputs(kind, dtype):
    g = torch.Generator().manual_seed(7)
    if kind == "llama":
        return {"input_ids": torch.randint(0, 96, (2, 7), generator=g)}
    return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g).to(dtype)}


def _output(model, kind, dtype):
    out = model(**_inputs(kind, dtype))
    return out.logits


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), sorted(set(sa) ^ set(sb))
    for key, t in sa.items():
        u = sb[key]
        assert t.dtype == u.dtype and t.shape == u.shape, (key, t.dtype, u.dtype, t.shape, u.shape)
        assert torch.equal(t.view(torch.uint8), u.view(torch.uint8)), key


def _quantized_modules(model):
    return {fqn: type(m).__name__ for fqn, m in model.named_modules() if isinstance(m, QuantizedModule)}


def _float_linears(model):
    return {fqn for fqn, m in model.named_modules() if type(m) is nn.Linear}


# --- registration and the config ------------------------------------------------------------------------------------
def test_registered_as_lowbit():
    from transformers.quantizers import auto

    assert auto.AUTO_QUANTIZER_MAPPING["lowbit"] is LowbitHfQuantizer
    assert auto.AUTO_QUANTIZATION_CONFIG_MAPPING["lowbit"] is LowbitConfig
    hf._register()  # idempotent


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_config_round_trips_through_a_dict(config):
    lowbit = LowbitConfig(config, modules_to_not_convert=["mlp"])
    d = json.loads(json.dumps(lowbit.to_dict()))
    assert d["quant_method"] == "lowbit" and d["quant_type"]["type"] == type(config).__name__
    back = transformers.quantizers.auto.AutoQuantizationConfig.from_dict(d)
    assert isinstance(back, LowbitConfig) and back.quant_type == config and back.modules_to_not_convert == ["mlp"]


def test_config_rejects_what_it_cannot_store():
    with pytest.raises(TypeError, match="quant_type: expected one of"):
        LowbitConfig("W4A8Config")
    with pytest.raises(TypeError, match="quant_type: expected one of"):
        LowbitConfig({"type": "Int4Config"})
    with pytest.raises(TypeError, match="unexpected arguments"):
        LowbitConfig(W4A8Config(), group_size=32)


# --- quantize on load, save, reload ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=repr)
@pytest.mark.parametrize("kind", list(_MODELS))
def test_quantize_on_load_equals_quantize_and_round_trips(checkpoints, tmp_path, kind, config, dtype):
    auto = _MODELS[kind][1]
    loaded = auto.from_pretrained(checkpoints / kind, dtype=dtype, quantization_config=LowbitConfig(config))
    assert _float_linears(loaded) == ({"lm_head"} if kind == "llama" else {"classifier"})  # HF's default skips
    assert len(_quantized_modules(loaded)) == (14 if kind == "llama" else 12)

    reference = auto.from_pretrained(checkpoints / kind, dtype=dtype)
    kept = _float_linears(loaded)
    quantize_(reference, config, filter_fn=lambda module, fqn: fqn not in kept)
    _assert_same_state(loaded, reference)
    out = _output(loaded, kind, dtype)
    assert out.dtype == dtype and torch.equal(out, _output(reference, kind, dtype))

    loaded.save_pretrained(tmp_path / "q")
    saved = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == "lowbit" and saved["quant_type"]["type"] == type(config).__name__
    reloaded = auto.from_pretrained(tmp_path / "q", dtype=dtype)
    assert isinstance(reloaded.hf_quantizer, LowbitHfQuantizer) and reloaded.hf_quantizer.pre_quantized
    _assert_same_state(reloaded, loaded)
    assert torch.equal(_output(reloaded, kind, dtype), out)


def test_reload_builds_no_float_weight(checkpoints, tmp_path, monkeypatch):
    auto = transformers.AutoModelForCausalLM
    auto.from_pretrained(checkpoints / "llama", quantization_config=LowbitConfig(W4A8Config())).save_pretrained(
        tmp_path / "q"
    )

    def no_float_layers(*args, **kwargs):
        raise AssertionError("a quantized checkpoint must load without quantizing anything")

    monkeypatch.setattr(LowbitHfQuantizer, "collect", no_float_layers)
    model = auto.from_pretrained(tmp_path / "q")
    assert len(_quantized_modules(model)) == 14


@pytest.mark.parametrize("missing, has", [(["bias"], "['weight']"), (["weight", "bias"], "[]")], ids=["bias", "all"])
def test_a_layer_missing_from_the_checkpoint_is_an_error(checkpoints, tmp_path, missing, has):
    from safetensors.torch import load_file, save_file

    if not hf._CONVERSION_OPS:
        pytest.skip("transformers 4.x hands the quantizer an uninitialised tensor for a missing one (and warns)")
    model = _MODELS["llama"][0]()
    model.save_pretrained(tmp_path)
    (path,) = tmp_path.glob("*.safetensors")
    state = load_file(path)
    for name in missing:
        del state[f"model.layers.1.self_attn.k_proj.{name}"]
    save_file(state, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"model\.layers\.1\.self_attn\.k_proj \(has {re.escape(has)}\)"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=LowbitConfig(W4A8Config()))


def test_modules_to_not_convert(checkpoints):
    config = LowbitConfig(FP8WeightOnlyConfig(), modules_to_not_convert=["mlp.down_proj", "model.layers.1.self_attn"])
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoints / "llama", quantization_config=config)
    kept = _float_linears(model)
    assert {"model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"} <= kept
    assert {f"model.layers.1.self_attn.{p}_proj" for p in "qkvo"} <= kept
    assert "lm_head" not in kept  # a list replaces the defaults
    assert "model.layers.0.self_attn.q_proj" in _quantized_modules(model)


def test_generate_after_a_cast(checkpoints):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        checkpoints / "llama", dtype=torch.float32, quantization_config=LowbitConfig(FP8WeightOnlyConfig())
    )
    model.to(torch.bfloat16)  # transformers refuses .half()/.float() on from_pretrained-quantized models; .to works
    layer = model.model.layers[0].self_attn.q_proj
    assert layer.weight.dtype == torch.float8_e4m3fn and layer.weight_scale.dtype == torch.float32
    ids = _inputs("llama", None)["input_ids"][:1]
    out = model.generate(ids, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 10)


# --- casts of quantize_d HF models ----------------------------------------------------------------------------------
CASTS = {
    "to_bf16": (lambda m: m.to(torch.bfloat16), torch.bfloat16),
    "half": (lambda m: m.half(), torch.float16),
    "bfloat16": (lambda m: m.bfloat16(), torch.bfloat16),
    "float": (lambda m: m.float(), torch.float32),
    "to_cpu": (lambda m: m.to("cpu"), None),
    "to_device_dtype": (lambda m: m.to("cpu", torch.float16), torch.float16),
}


@pytest.mark.parametrize("cast", list(CASTS))
@pytest.mark.parametrize("config", CONFIGS, ids=repr)
@pytest.mark.parametrize("kind", list(_MODELS))
def test_quantized_hf_model_survives_every_cast(kind, config, cast):
    model = _MODELS[kind][0]().to(torch.bfloat16).eval()
    quantize_(model, config)
    storage = {
        f"{fqn}.{name}": getattr(m, name).clone()
        for fqn, m in model.named_modules()
        if isinstance(m, QuantizedModule)
        for name in m.storage_buffers
        if getattr(m, name) is not None
    }
    fn, dtype = CASTS[cast]
    fn(model)
    dtype = dtype or torch.bfloat16
    state = model.state_dict()
    for key, t in storage.items():
        assert state[key].dtype == t.dtype and torch.equal(state[key].view(torch.uint8), t.view(torch.uint8)), key
    with torch.no_grad():
        out = _output(model, kind, dtype)
    assert out.dtype == dtype and torch.isfinite(out).all() and out.abs().sum() > 0


# --- memory while quantizing on load --------------------------------------------------------------------------------
def _heap_in_use():
    """Bytes glibc's malloc has handed out and not taken back (arena chunks + mmapped chunks): where torch's CPU
    allocator gets every tensor from. mallinfo2 needs glibc >= 2.33."""

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (n, ctypes.c_size_t)
            for n in ["arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks"]
        ]
        _fields_ += [("fordblks", ctypes.c_size_t), ("keepcost", ctypes.c_size_t)]

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("needs glibc's mallinfo2")
    mallinfo2.restype = MallInfo2
    return lambda: (lambda m: m.uordblks + m.hblkhd)(mallinfo2())


def test_peak_memory_on_load_stays_below_the_float_model(tmp_path, monkeypatch):
    """Two measurements while a float32 checkpoint loads as bf16 with W4A8 (8 layers, linears ~98% of it):
    - the float tensors the quantizer holds at once, tracked with weakrefs: at most one layer's;
    - the heap's peak, sampled after every aten op (a TorchDispatchMode reading mallinfo2): below the bf16 float
      model's size plus one layer, and below what loading the float model alone takes."""
    from torch.utils._python_dispatch import TorchDispatchMode

    in_use = _heap_in_use()
    model = _randomise(_llama(hidden_size=256, intermediate_size=1024, num_hidden_layers=8, vocab_size=128))
    model.save_pretrained(tmp_path / "float")
    linears = [m for m in model.modules() if type(m) is nn.Linear]
    float_bytes = sum(p.numel() * 2 for p in model.parameters())  # loaded as bf16
    layer_bytes = max(sum(p.numel() * 2 for p in m.parameters()) for m in linears)
    del model, linears

    class Peak(TorchDispatchMode):
        def __enter__(self):
            self.base, self.top = in_use(), 0
            return super().__enter__()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.top = max(self.top, in_use() - self.base)
            return out

    live, most = {}, [0]
    collect = LowbitHfQuantizer.collect

    def tracking_collect(self, model, param_name, value):
        live[id(value)] = value.numel() * value.element_size()
        weakref.finalize(value, live.pop, id(value), None)
        most[0] = max(most[0], sum(live.values()))
        return collect(self, model, param_name, value)

    auto = transformers.AutoModelForCausalLM
    with Peak() as float_load:
        auto.from_pretrained(tmp_path / "float", dtype=torch.bfloat16)
    monkeypatch.setattr(LowbitHfQuantizer, "collect", tracking_collect)
    with Peak() as on_load:
        q = auto.from_pretrained(
            tmp_path / "float", dtype=torch.bfloat16, quantization_config=LowbitConfig(W4A8Config())
        )
    assert len(_quantized_modules(q)) == 56
    assert 0 < most[0] <= layer_bytes
    assert on_load.top < float_bytes + layer_bytes and on_load.top < float_load.top


@pytest.mark.parametrize("config", CONFIGS, ids=repr)
def test_gpu_reservation_before_loading_is_the_quantized_size(checkpoints, monkeypatch, config):
    """transformers 5.x reserves each device's share of the model before loading (``caching_allocator_warmup``),
    sized by ``param_element_size``: for layers quantized on load that is their quantized buffers' bytes, so the
    reservation equals the loaded quantized model's size rather than the float model's."""
    modeling_utils = pytest.importorskip("transformers.modeling_utils")
    if not hasattr(modeling_utils, "get_total_byte_count"):
        pytest.skip("this transformers reserves no device memory before loading")
    reserved = []

    def record(model, expanded_device_map, hf_quantizer):
        # On CPU the warm-up does nothing: size it as if every tensor went to a GPU.
        as_gpu = {name: torch.device("cuda", 0) for name in expanded_device_map}
        reserved.append(sum(modeling_utils.get_total_byte_count(model, as_gpu, hf_quantizer).values()))

    monkeypatch.setattr(modeling_utils, "caching_allocator_warmup", record)
    auto = transformers.AutoModelForCausalLM
    q = auto.from_pretrained(
        checkpoints / "llama", dtype=torch.bfloat16, quantization_config=LowbitConfig(config), device_map="cpu"
    )  # a device map: what makes transformers reserve memory
    loaded = sum(t.numel() * t.element_size() for t in q.state_dict().values())
    float_bytes = sum(t.numel() * t.element_size() for t in auto.from_pretrained(
        checkpoints / "llama", dtype=torch.bfloat16).state_dict().values())  # fmt: skip
    assert reserved == [loaded] and loaded < float_bytes
