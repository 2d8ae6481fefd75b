"""Bottleneck adapter layers (Houlsby / Pfeiffer) as a PEFT method of our own.

An adapter is ``y + up(act(down(dropout(y))))`` on the output ``y`` of a decoder layer's
attention block and MLP (Houlsby, https://arxiv.org/abs/1902.00751) or of its MLP only
(Pfeiffer, https://arxiv.org/abs/2005.00247), before the layer adds it to the residual stream.

Why not a library: AdapterHub's ``adapters`` package (1.3.0) implements these layers but requires
``transformers ~=4.57``, and this project pins transformers 5.x; peft 0.21 has no bottleneck adapter.
Why a PEFT method rather than a module with its own save/load: registered with PEFT, a trained run is
an ordinary ``PeftModel`` whose ``adapter/`` folder (``adapter_config.json`` with ``peft_type:
BOTTLENECK`` + ``adapter_model.safetensors``) everything else already handles: ``save_pretrained``,
``PeftModel.from_pretrained``, the encrypted save/load of :mod:`tuneforge.models.sealed`,
``disable_adapter()`` for the baseline, ``set_adapter`` in the serving engine.

PEFT's ``register_peft_method`` accepts only names of its own closed ``PeftType`` enum, so
:func:`register` writes the same three registry entries (config, tuner, prefix) under a member of our own
str enum, which PEFT accepts as a ``peft_type`` (huggingface/peft#2634). Registration is explicit, not an
import side effect (importing peft costs ~2 s): :func:`build` and the functions that read an adapter folder
(:func:`tuneforge.models.load`, :func:`tuneforge.models.sealed.load_adapter`, the serving engine) call it first.

The adapters add non-linear layers that no weight matrix of the base can express, so they cannot be
merged: :data:`MERGE_REFUSAL` says so wherever a merge is asked for.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from tuneforge.config.bottleneck import BottleneckMethod
from tuneforge.errors import ExportError, ModelError

MERGE_REFUSAL = (
    "a bottleneck adapter adds non-linear layers (down-projection, activation, up-projection) after the attention "
    "and MLP blocks, which no change of the base model's weight matrices can express, so it cannot be merged into "
    "the base weights (nor exported as a merged model or GGUF file, nor used as the starting model of another run). "
    "Serve or evaluate the run with its adapter instead (`tuneforge serve RUN`, `tuneforge eval RUN`), or train "
    "with method lora or dora for a mergeable adapter"
)

# The decoder-layer sub-blocks each placement wraps (Llama-family module names).
PLACEMENTS: dict[str, tuple[str, ...]] = {"houlsby": ("self_attn", "mlp"), "pfeiffer": ("mlp",)}
_DECODER_LAYER = re.compile(r"(?:.*\.)?layers\.(\d+)")


class BottleneckType(str, enum.Enum):
    """Our PEFT type; a str enum, so ``"BOTTLENECK"`` read from adapter_config.json finds the same registry entries."""

    BOTTLENECK = "BOTTLENECK"


@dataclass
class BottleneckConfig(PeftConfig):
    """The PEFT config saved as ``adapter_config.json`` (widths resolved: it loads without the run's config)."""

    bottleneck_size: int = field(default=8, metadata={"help": "Units of the bottleneck."})
    non_linearity: str = field(default="relu", metadata={"help": "relu, gelu, silu or swish."})
    placement: str = field(default="houlsby", metadata={"help": "houlsby or pfeiffer."})
    init_weights: str = field(default="identity", metadata={"help": "identity (zero up-projection) or random."})
    adapter_dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input."})
    layers_to_transform: Optional[list[int]] = field(default=None, metadata={"help": "Decoder layers adapted."})
    layers_pattern: Optional[str] = field(default="layers", metadata={"help": "Name of the decoder layer list."})
    target_modules: Optional[list[str]] = field(default=None, metadata={"help": "Set from placement."})
    exclude_modules: Optional[list[str]] = field(default=None, metadata={"help": "Unused."})
    modules_to_save: Optional[list[str]] = field(default=None, metadata={"help": "Unused."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.peft_type = BottleneckType.BOTTLENECK
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)} (got {self.placement!r})")
        self.target_modules = list(PLACEMENTS[self.placement])


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """Wraps one attention block or MLP: its output plus the (active) adapter's residual correction."""

    adapter_layer_names = ("bottleneck_down", "bottleneck_up")
    other_param_names = ("bottleneck_dropout", "bottleneck_act")

    def __init__(self, base_layer: nn.Module, adapter_name: str, hidden_size: int, config: BottleneckConfig):
        super().__init__()
        self.base_layer = base_layer
        self.hidden_size = hidden_size
        self.bottleneck_down = nn.ModuleDict({})
        self.bottleneck_up = nn.ModuleDict({})
        self.bottleneck_dropout = nn.ModuleDict({})
        self.bottleneck_act = nn.ModuleDict({})
        self._active_adapter = adapter_name
        self.merged_adapters: list[str] = []
        self.update_layer(adapter_name, config)

    def update_layer(self, adapter_name: str, config: BottleneckConfig) -> None:
        from transformers.activations import ACT2FN

        down = nn.Linear(self.hidden_size, config.bottleneck_size)
        up = nn.Linear(config.bottleneck_size, self.hidden_size)
        if config.init_weights == "identity":
            # A zero up-projection makes the adapter's correction exactly zero at the start: the untrained
            # model is the base model, and training moves away from it (Houlsby's near-identity init).
            nn.init.zeros_(up.weight)
            nn.init.zeros_(up.bias)
        self.bottleneck_down[adapter_name] = down
        self.bottleneck_up[adapter_name] = up
        dropout = config.adapter_dropout
        self.bottleneck_dropout[adapter_name] = nn.Dropout(dropout) if dropout else nn.Identity()
        self.bottleneck_act[adapter_name] = ACT2FN[config.non_linearity]
        base = next(self.base_layer.parameters())
        for name in self.adapter_layer_names:
            getattr(self, name)[adapter_name].to(base.device)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        raise ExportError(MERGE_REFUSAL)

    def _adapt(self, y: torch.Tensor) -> torch.Tensor:
        for name in self.active_adapters:
            if name not in self.bottleneck_down:
                continue
            down, up = self.bottleneck_down[name], self.bottleneck_up[name]
            x = self.bottleneck_dropout[name](y.to(down.weight.dtype))
            y = y + up(self.bottleneck_act[name](down(x))).to(y.dtype)
        return y

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.base_layer(*args, **kwargs)
        if self.disable_adapters:
            return out
        # Attention blocks return (hidden states, attention weights); MLPs return the hidden states.
        if isinstance(out, tuple):
            return (self._adapt(out[0]), *out[1:])
        return self._adapt(out)


class BottleneckModel(BaseTuner):
    """The PEFT tuner: wraps the chosen sub-blocks of every (or every listed) decoder layer."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _pre_injection_hook(self, model: nn.Module, config: PeftConfig, adapter_name: str) -> None:
        check_architecture(model, config)

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, peft_config)
            return
        new = BottleneckLayer(target, adapter_name, _hidden_size(self.model), peft_config)
        if adapter_name not in self.active_adapters:
            new.requires_grad_(False)
        self._replace_module(parent, target_name, new, target)

    def _check_merge_allowed(self) -> None:
        raise ExportError(MERGE_REFUSAL)


def _hidden_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "hidden_size", None)
    if not isinstance(size, int):
        raise ModelError(f"method 'bottleneck' needs the model config's hidden_size; {type(model).__name__} has none")
    return size


def decoder_layers(model: nn.Module) -> dict[int, nn.Module]:
    """The model's decoder layers by index: modules named ``...layers.N`` holding ``self_attn`` and ``mlp``."""
    found = {}
    for name, module in model.named_modules():
        match = _DECODER_LAYER.fullmatch(name)
        if match and all(isinstance(getattr(module, part, None), nn.Module) for part in PLACEMENTS["houlsby"]):
            found[int(match.group(1))] = module
    return found


def check_architecture(model: nn.Module, config: Any) -> None:
    """Refuse a model whose decoder layers are not Llama-shaped, or layer indices it does not have.

    Raises:
        ModelError: names what was looked for and what the model is.
    """
    layers = decoder_layers(model)
    if not layers:
        kind = getattr(getattr(model, "config", None), "model_type", None)
        raise ModelError(
            f"method 'bottleneck' wraps the attention block and MLP of Llama-family decoder layers (modules named "
            f"'model.layers.N.self_attn' and 'model.layers.N.mlp', as in Llama, SmolLM2, Mistral, Qwen2); "
            f"{type(model).__name__} (model_type {kind!r}) has none. Use method lora or ia3 for this model"
        )
    wanted = getattr(config, "layers_to_transform", None) or []
    missing = sorted(set(wanted) - set(layers))
    if missing:
        raise ModelError(
            f"method.layers names decoder layers {missing} but the model has {len(layers)} "
            f"(indices 0-{max(layers)})"
        )


def register() -> None:
    """Make PEFT know the BOTTLENECK type (idempotent): before building or reading a bottleneck adapter."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    kind = BottleneckType.BOTTLENECK
    PEFT_TYPE_TO_CONFIG_MAPPING.setdefault(kind, BottleneckConfig)
    PEFT_TYPE_TO_TUNER_MAPPING.setdefault(kind, BottleneckModel)
    PEFT_TYPE_TO_PREFIX_MAPPING.setdefault(kind, BottleneckModel.prefix)


def peft_config(cfg: BottleneckMethod, hidden_size: int) -> BottleneckConfig:
    """The PEFT config of a ``method: {name: bottleneck}`` section for a model of ``hidden_size``.

    Raises:
        ModelError: the reduction factor leaves no bottleneck unit for this model.
    """
    try:
        width = cfg.width(hidden_size)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    return BottleneckConfig(
        task_type="CAUSAL_LM", bottleneck_size=width, non_linearity=cfg.non_linearity, placement=cfg.placement,
        init_weights=cfg.init, adapter_dropout=cfg.dropout, layers_to_transform=cfg.layers,
    )


def build(model: Any, cfg: BottleneckMethod) -> Any:
    """Wrap ``model`` in a ``PeftModel`` with fresh bottleneck adapters (the ``BUILDERS`` entry)."""
    from peft import get_peft_model

    register()
    config = peft_config(cfg, _hidden_size(model))
    check_architecture(model, config)  # before PEFT wraps anything, so a refusal leaves the model as it was
    return get_peft_model(model, config)


def check_mergeable(adapter: Path) -> None:
    """Refuse to merge the adapter folder ``adapter`` when it holds a bottleneck adapter (read without loading it).

    Raises:
        ExportError: says why and what to do instead.
    """
    if is_bottleneck_adapter(adapter):
        raise ExportError(f"cannot merge {adapter}: {MERGE_REFUSAL}")


def is_bottleneck_adapter(folder: Path) -> bool:
    """Whether an adapter folder holds a bottleneck adapter (read from its plaintext adapter_config.json)."""
    config = Path(folder) / "adapter_config.json"
    try:
        return json.loads(config.read_text()).get("peft_type") == BottleneckType.BOTTLENECK.value
    except (OSError, ValueError, AttributeError):
        return False
