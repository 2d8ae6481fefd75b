"""Weights encrypted at rest: saved from a model and loaded into one in memory, never as a plaintext file.

An encrypted weights folder looks like a plain one (``adapter_config.json`` or ``config.json``,
the tokenizer, ``generation_config.json``) except that its one weights file,
``adapter_model.safetensors`` or ``model.safetensors``, is in the encrypted format of
:mod:`tuneforge.security.crypto`. The state dict is serialized with ``safetensors.torch.save``
to bytes and encrypted chunk by chunk; loading decrypts to bytes, ``safetensors.torch.load``s
them and puts the tensors into the model (PEFT: ``set_peft_model_state_dict``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from tuneforge.errors import ModelError
from tuneforge.security.at_rest import Sealer, read_file
from tuneforge.security.crypto import is_encrypted

ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_WEIGHTS = "model.safetensors"


def is_sealed(folder: str | Path) -> bool:
    """Whether ``folder`` holds encrypted weights."""
    return any(is_encrypted(Path(folder) / name) for name in (ADAPTER_WEIGHTS, MODEL_WEIGHTS))


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A state dict as safetensors bytes; tensors sharing storage (tied embeddings) are stored once."""
    from safetensors.torch import save

    seen: set[tuple[int, int]] = set()
    unique = {}
    for name, tensor in state.items():
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if ident in seen and tensor.device.type != "meta":
            continue  # the tied copy: from_config ties it again on load
        seen.add(ident)
        unique[name] = tensor.detach().contiguous().cpu()
    return save(unique, metadata={"format": "pt"})


def save_sealed(model: Any, folder: Path, sealer: Sealer, relative: str) -> None:
    """Save ``model``'s config and encrypted weights into ``folder`` (to be renamed to ``RUN/relative``)."""
    from peft import PeftModel, get_peft_model_state_dict

    if isinstance(model, PeftModel):
        name = model.active_adapter
        config = copy.copy(model.peft_config[name])
        config.inference_mode = True  # as PeftModel.save_pretrained writes it
        config.save_pretrained(str(folder))
        state, file = get_peft_model_state_dict(model, adapter_name=name), ADAPTER_WEIGHTS
    else:
        model.config.save_pretrained(str(folder))
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(str(folder))
        state, file = model.state_dict(), MODEL_WEIGHTS
    sealer.write_bytes(folder / file, state_bytes(state), name=f"{relative}/{file}")


def load_state(file: Path, key: Any = None, *, expected_name: str | None = None) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(read_file(file, key, expected_name=expected_name))


def put_state(model: Any, state: dict[str, torch.Tensor], where: Path) -> Any:
    """Put decrypted tensors into ``model`` in place: the active adapter of a PEFT model, else every weight.

    Raises:
        ModelError: ``state`` does not fit ``model`` (tensors missing or not used); names ``where``.
    """
    from peft import PeftModel, set_peft_model_state_dict

    if isinstance(model, PeftModel):
        result = set_peft_model_state_dict(model, state, adapter_name=model.active_adapter)
        if result.unexpected_keys:
            raise ModelError(f"cannot load adapter {where}: tensors it does not use: {result.unexpected_keys[:5]}")
        return model
    missing, unexpected = model.load_state_dict(state, strict=False)
    model.tie_weights()
    current = model.state_dict()
    loaded = {current[n].data_ptr() for n in state if n in current}
    untied = [n for n in missing if current[n].data_ptr() not in loaded]  # a tied copy shares the loaded storage
    if unexpected or untied:
        raise ModelError(f"cannot load {where}: tensors missing {untied[:5]}, unexpected {unexpected[:5]}")
    return model


def attach_adapter(model: Any, adapter: Path, adapter_name: str = "default") -> Any:
    """Put the adapter folder ``adapter`` (plain, or an encrypted run's) onto ``model``; returns the PEFT model.

    Every loader goes through here, so tuneforge's own PEFT type (bottleneck adapters) is registered
    before PEFT reads an ``adapter_config.json`` that names it; registering lazily keeps
    ``import tuneforge.methods`` from importing peft.
    """
    from peft import PeftModel

    from tuneforge.methods.bottleneck import register

    register()
    if is_sealed(adapter):
        return load_adapter(model, adapter, adapter_name)
    if isinstance(model, PeftModel):
        model.load_adapter(str(adapter), adapter_name=adapter_name)
        return model
    return PeftModel.from_pretrained(model, str(adapter), adapter_name=adapter_name)


def load_adapter(model: Any, adapter: Path, adapter_name: str = "default", key: Any = None) -> Any:
    """Put the (encrypted) adapter in ``adapter`` onto ``model``; returns the PEFT model (see :func:`attach_adapter`)."""
    from peft import PeftConfig, PeftModel, set_peft_model_state_dict

    state = load_state(adapter / ADAPTER_WEIGHTS, key)  # first: a wrong key fails before anything changes
    config = PeftConfig.from_pretrained(str(adapter))
    config.inference_mode = True
    if isinstance(model, PeftModel):
        model.add_adapter(adapter_name, config)
    else:
        model = PeftModel(model, config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    if result.unexpected_keys:
        raise ModelError(f"cannot load adapter {adapter}: tensors it does not use: {result.unexpected_keys[:5]}")
    return model.eval()


def load_full(folder: Path, dtype: torch.dtype = torch.float32, key: Any = None, trust_remote_code: bool = False) -> Any:
    """The full model saved (encrypted) in ``folder``: built from its config, then given the decrypted tensors."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    state = load_state(folder / MODEL_WEIGHTS, key)
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    model = put_state(AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code),
                      state, folder)
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(folder))
    return model.eval()
