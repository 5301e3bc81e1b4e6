"""Hugging Face transformers integration: :class:`LowbitConfig` and its quantizer, ``quant_method="lowbit"``.

Importing this module registers both with ``transformers.quantizers.auto`` (transformers is the optional ``hf``
extra; ``import lowbit_flex`` never imports it)::

    from lowbit_flex.hf import LowbitConfig
    from lowbit_flex.nn import W4A8Config

    config = LowbitConfig(W4A8Config(group_size=128))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, quantization_config=config)
    model.save_pretrained(out)  # config.json carries the lowbit config
    model = AutoModelForCausalLM.from_pretrained(out)  # the same quantized model, bitwise

How loading works. Before any weight is read, the quantizer runs ``quantize_`` on the model skeleton (on the meta
device), which swaps each ``nn.Linear`` it converts for an empty quantized module. For a float checkpoint, each such
layer's float ``weight`` and ``bias`` (float placeholders in the skeleton, under transformers 5.x) are then routed to
the quantizer as they are read (``param_needs_quantization``); once a layer's tensors are all there, it builds that one
float ``nn.Linear`` and quantizes it with :func:`lowbit_flex.nn.quantize_linear` (what ``quantize_`` calls), so the
result equals ``quantize_`` on the loaded float model bitwise and only one layer is ever held in float. A quantized
checkpoint loads straight into the quantized modules' buffers. transformers 5.x routes the float tensors through a
conversion op (``get_quantize_ops``), 4.5x through ``create_quantized_param``; this module implements both.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from typing import Any

import torch
from torch import nn
from transformers.quantizers import auto as _auto
from transformers.quantizers.base import HfQuantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from lowbit_flex._version import __version__
from lowbit_flex.nn import QuantizedModule, quantize_, quantize_linear, registered_configs

QUANT_METHOD = "lowbit"
# transformers 5 loads weights through conversion ops (core_model_loading); 4.5x through create_quantized_param.
_CONVERSION_OPS = hasattr(HfQuantizer, "get_quantize_ops")
_FLOAT_LINEAR_PARAMS = ("weight", "bias")


class LowbitConfig(QuantizationConfigMixin):
    """``quantization_config`` for ``from_pretrained``: quantize with a lowbit_flex config while loading.

    Args:
        quant_type: a config ``quantize_`` takes (``W4A8Config(...)``, ``FP8WeightOnlyConfig()``,
            ``FPxWeightOnlyConfig(ebits, mbits)``), or its dict form as ``config.json`` stores it
            (``{"type": "W4A8Config", "group_size": 128}``).
        modules_to_not_convert: module names kept in float, matched the way transformers' own quantizers match
            them. ``None`` (the default) keeps the output embedding (``lm_head``), tied weights and the model's last
            layer, as transformers' quantizers do; a list replaces those defaults.
    """

    def __init__(self, quant_type: Any, modules_to_not_convert: list[str] | None = None, **kwargs: Any) -> None:
        kwargs.pop("quant_method", None)  # from_dict passes config.json's entries back
        kwargs.pop("lowbit_flex_version", None)  # informative only: which version wrote the checkpoint
        if kwargs:
            raise TypeError(f"LowbitConfig: unexpected arguments {sorted(kwargs)}")
        self.quant_method = QUANT_METHOD
        self.quant_type = _config_from(quant_type)
        self.modules_to_not_convert = None if modules_to_not_convert is None else list(modules_to_not_convert)

    def to_dict(self) -> dict[str, Any]:
        return {
            "quant_method": QUANT_METHOD,
            "quant_type": {"type": type(self.quant_type).__name__, **dataclasses.asdict(self.quant_type)},
            "modules_to_not_convert": copy.copy(self.modules_to_not_convert),
            "lowbit_flex_version": __version__,
        }


def _config_from(quant_type: Any) -> object:
    types = {t.__name__: t for t in registered_configs()}
    if isinstance(quant_type, tuple(types.values())):
        if not dataclasses.is_dataclass(quant_type):
            raise TypeError(f"quant_type: {type(quant_type).__name__} is not a dataclass, so config.json can't hold it")
        return quant_type
    if isinstance(quant_type, dict) and quant_type.get("type") in types:
        fields = {k: v for k, v in quant_type.items() if k != "type"}
        return types[quant_type["type"]](**fields)
    raise TypeError(f"quant_type: expected one of {', '.join(sorted(types))} or its dict form, got {quant_type!r}")


class LowbitHfQuantizer(HfQuantizer):
    """The transformers quantizer for :class:`LowbitConfig` (see the module docstring)."""

    requires_calibration = False
    requires_parameters_quantization = True  # transformers 4.5x: the float weights go to create_quantized_param

    def __init__(self, quantization_config: LowbitConfig, **kwargs: Any) -> None:
        super().__init__(quantization_config, **kwargs)
        self.modules_to_not_convert: list[str] = []
        self._pending: dict[str, dict[str, torch.Tensor]] = {}  # layer -> its float tensors read so far
        self._requested_dtype: Any = None  # transformers 4.5x, quantized checkpoints (see update_dtype)
        self._checkpoint_dtype: Any = None

    def update_dtype(self, dtype: Any) -> Any:
        if _CONVERSION_OPS or not self.pre_quantized:
            return dtype
        # transformers 4.5x casts every floating-point tensor of a quantized checkpoint (float8 aside) to the load
        # dtype, which would round the float32 scales: load in float32, cast after loading (casts keep the scales).
        self._requested_dtype = dtype
        return torch.float32

    def update_tp_plan(self, config: Any) -> Any:
        # transformers 4.5x calls this with the checkpoint's config before it settles the load dtype: what
        # dtype="auto" means (the dtype the checkpoint was saved in).
        self._checkpoint_dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        return config

    def _process_model_before_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        config = self.quantization_config
        names = self.get_modules_to_not_convert(
            model, config.modules_to_not_convert, getattr(model, "_keep_in_fp32_modules", None)
        )
        # transformers' defaults name the model's last parameter, e.g. "classifier.bias": keep the whole module.
        self.modules_to_not_convert = sorted({re.sub(r"\.(weight|bias)$", "", name) for name in names})
        skip, float_dtypes = self.modules_to_not_convert, {}

        def convert(linear: nn.Linear, fqn: str) -> bool:
            float_dtypes[fqn] = linear.weight.dtype
            return _should_convert(fqn, skip)

        quantize_(model, config.quant_type, filter_fn=convert)
        if _CONVERSION_OPS and not self.pre_quantized:
            # transformers 5.17 casts each checkpoint tensor to the dtype of the skeleton's entry before our
            # conversion op sees it, so the int8/int32/float8 storage buffers (and W4A8's float32 bias) would truncate
            # or round the float weights; 5.24 skips that cast for params quantized on load (it uses the load dtype).
            # Until a layer is quantized, its weight and bias are float placeholders of the float layer's shape and
            # dtype, so both versions hand us the same tensors; ``collect`` replaces them with the quantized buffers.
            for fqn, module in model.named_modules():
                if isinstance(module, QuantizedModule):
                    _float_placeholders(module, float_dtypes[fqn])
                    self._pending[fqn] = {}  # a layer the checkpoint lacks entirely is an error too
        return model

    def param_needs_quantization(self, model: nn.Module, param_name: str, **kwargs: Any) -> bool:
        if self.pre_quantized:
            return False
        module, name = _module_and_name(model, param_name)
        return isinstance(module, QuantizedModule) and name in _FLOAT_LINEAR_PARAMS

    def param_element_size(self, model: nn.Module, param_name: str, param: torch.Tensor) -> float:
        """Bytes per element of ``param`` once loaded, which transformers 5.x reserves on the GPU before loading
        (``caching_allocator_warmup``). A float weight or bias quantized on load is stored as its layer's quantized
        buffers: counted at their size, the reservation is the quantized model's (it was the float model's: 3.55 GiB
        for an 8-layer 7B-shaped Llama whose W4A8 g128 form takes 1.3 GiB, measured on an H200)."""
        if not self.param_needs_quantization(model, param_name):
            return super().param_element_size(model, param_name, param)
        module, name = _module_and_name(model, param_name)
        with torch.device("meta"):
            float_layer = nn.Linear(
                module.in_features, module.out_features, bias=module.bias is not None, dtype=param.dtype
            )
        # The other buffers (scales) are in the skeleton already, and transformers counts them itself.
        stored = quantize_linear(float_layer, self.quantization_config.quant_type)._buffers[name]
        return stored.numel() * stored.element_size() / param.numel()

    def create_quantized_param(
        self, model: nn.Module, param_value: torch.Tensor, param_name: str, target_device: Any, **kwargs: Any
    ) -> None:  # transformers 4.5x
        self.collect(model, param_name, param_value.to(target_device))

    def get_quantize_ops(self) -> Any:  # transformers 5.x
        return _quantize_op_class()(self)

    def collect(self, model: nn.Module, param_name: str, value: torch.Tensor) -> list[str]:
        """Keep a float tensor of a layer being quantized; once its ``weight`` (and ``bias``) are all here,
        quantize that layer as ``quantize_`` does and fill its module's buffers. Returns the state-dict keys then
        filled (none before)."""
        fqn, _, name = param_name.rpartition(".")
        module = model.get_submodule(fqn)
        got = self._pending.setdefault(fqn, {})
        got[name] = value
        if "weight" not in got or (module.bias is not None and "bias" not in got):
            return []
        del self._pending[fqn]
        quantized = quantize_linear(_float_linear(module, got, fqn), self.quantization_config.quant_type)
        for key, buf in quantized.named_buffers(recurse=False):
            setattr(module, key, buf)
            buf._is_hf_initialized = True  # transformers must not re-initialise it
        module._is_hf_initialized = True
        return [f"{fqn}.{key}" if fqn else key for key, _ in module.named_buffers(recurse=False)]

    def update_missing_keys(self, model: nn.Module, missing_keys: list[str], prefix: str) -> list[str]:
        # transformers 4.5x: a float checkpoint has no scales; they are made with the weight.
        if self.pre_quantized:
            return missing_keys
        made = {
            f"{fqn}.{name}"
            for fqn, module in model.named_modules()
            if isinstance(module, QuantizedModule)
            for name, _ in module.named_buffers(recurse=False)
            if name not in _FLOAT_LINEAR_PARAMS
        }
        return [k for k in missing_keys if k not in made and f"{prefix}.{k}" not in made]

    def _process_model_after_weight_loading(self, model: nn.Module, **kwargs: Any) -> nn.Module:
        if self._pending:
            layers = ", ".join(f"{fqn} (has {sorted(got)})" for fqn, got in sorted(self._pending.items()))
            self._pending.clear()
            raise ValueError(f"lowbit: the checkpoint lacks part of these layers' float tensors: {layers}")
        dtype = self._dtype_after_loading()
        if dtype is not None and dtype != torch.float32:
            _cast_after_float32_load(model, dtype)
            model.config.dtype = dtype
        return model

    def _dtype_after_loading(self) -> torch.dtype | None:
        if _CONVERSION_OPS or not self.pre_quantized:
            return None
        dtype = self._checkpoint_dtype if self._requested_dtype == "auto" else self._requested_dtype
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype

    def is_serializable(self, safe_serialization: bool | None = None) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False

    @property
    def is_compileable(self) -> bool:
        return True


def _cast_after_float32_load(model: nn.Module, dtype: torch.dtype) -> None:
    """What loading in ``dtype`` would have given (transformers 4.5x, a quantized checkpoint loaded in float32): the
    float parameters and persistent buffers in ``dtype``, except the modules transformers keeps in float32 then
    (``_keep_in_fp32_modules_strict`` for fp16/bf16, ``_keep_in_fp32_modules`` too for fp16); non-persistent buffers
    (rotary tables) as the model computed them; storage buffers kept (:class:`QuantizedModule`)."""
    keep = list(getattr(model, "_keep_in_fp32_modules_strict", None) or [])
    if dtype == torch.float16:
        keep += list(getattr(model, "_keep_in_fp32_modules", None) or [])
    kept = re.compile("|".join(rf"(^|\.){re.escape(name)}($|\.)" for name in keep)) if keep else None
    for fqn, module in model.named_modules():
        if kept is not None and kept.search(fqn):
            continue
        computed = {n: module._buffers[n] for n in module._non_persistent_buffers_set if n in module._buffers}
        module._apply(lambda t: t.to(dtype) if t.is_floating_point() else t, recurse=False)
        module._buffers.update(computed)


def _module_and_name(model: nn.Module, param_name: str) -> tuple[nn.Module | None, str]:
    fqn, _, name = param_name.rpartition(".")
    try:
        return model.get_submodule(fqn), name
    except AttributeError:
        return None, name


def _float_placeholders(module: QuantizedModule, dtype: torch.dtype) -> None:
    """Meta ``weight`` and ``bias`` (when it has one) shaped as the float ``nn.Linear``'s, in ``dtype``."""
    module.weight = torch.empty(module.out_features, module.in_features, dtype=dtype, device="meta")
    if module.bias is not None:
        module.bias = torch.empty(module.out_features, dtype=dtype, device="meta")


def _float_linear(module: QuantizedModule, tensors: dict[str, torch.Tensor], fqn: str) -> nn.Linear:
    """The float ``nn.Linear`` the checkpoint describes for ``module`` (what the float model would hold)."""
    shape, got = (module.out_features, module.in_features), tuple(tensors["weight"].shape)
    if got != shape:
        raise ValueError(f"{fqn}.weight: expected shape {shape} in the float checkpoint, got {got}")
    with torch.device("meta"):
        linear = nn.Linear(module.in_features, module.out_features, bias="bias" in tensors)
    for name, t in tensors.items():
        setattr(linear, name, nn.Parameter(t, requires_grad=False))
    return linear


def _should_convert(fqn: str, patterns: list[str]) -> bool:
    """Whether ``fqn`` matches none of ``modules_to_not_convert``, with transformers' rule where it has one (5.x:
    prefix at a module boundary, regex, or suffix) and 4.5x's substring rule otherwise."""
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module
    except ImportError:
        return not any(p in fqn for p in patterns)
    return should_convert_module(fqn, patterns)


@functools.cache
def _quantize_op_class() -> type:
    from transformers.core_model_loading import ConversionOps

    class LowbitQuantize(ConversionOps):
        """transformers 5.x: receives each float tensor of a layer being quantized, as it is read."""

        def __init__(self, hf_quantizer: LowbitHfQuantizer) -> None:
            self.hf_quantizer = hf_quantizer

        def convert(self, input_dict, model=None, missing_keys=None, **kwargs):
            out = {}
            for name, value in input_dict.items():
                value = value[0] if isinstance(value, list) else value
                if not self.hf_quantizer.param_needs_quantization(model, name):
                    out[name] = value
                    continue
                for key in self.hf_quantizer.collect(model, name, value):
                    if missing_keys is not None:
                        missing_keys.discard(key)
            return out

    return LowbitQuantize


def _register() -> None:
    """Register the config and the quantizer under ``quant_method="lowbit"`` (once per process)."""
    for mapping, register, cls in (
        (_auto.AUTO_QUANTIZATION_CONFIG_MAPPING, _auto.register_quantization_config, LowbitConfig),
        (_auto.AUTO_QUANTIZER_MAPPING, _auto.register_quantizer, LowbitHfQuantizer),
    ):
        known = mapping.get(QUANT_METHOD)
        if known is not None and known.__module__ == __name__ and known.__qualname__ == cls.__qualname__:
            mapping[QUANT_METHOD] = cls  # this module imported again (a reload): the newest class
            continue
        register(QUANT_METHOD)(cls)  # raises if another package took the name


_register()
