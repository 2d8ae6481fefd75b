"""Depth pruning: keep some of a decoder's layers, drop the rest (a smaller student for distillation).

Which layers: ``keep_layers: 15`` keeps 15 layers spread evenly over the depth, always
the first and the last (the first turns embeddings into the residual stream's working
form and the last prepares it for the LM head; both matter most in pruning studies), or
an explicit list such as ``[0, 2, 4, ...]``. The result is an ordinary model of the same
architecture with fewer layers, so it saves as a plain Hugging Face folder and everything
downstream (train, eval, merge, export, serve) works on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.errors import ModelError


def layer_indices(num_layers: int, keep: int | list[int], *, field: str = "model.keep_layers") -> list[int]:
    """The layers to keep, in order.

    Args:
        num_layers: Layers of the model.
        keep: How many layers to keep (evenly spread, first and last included), or their indices.
        field: Named in errors (the config field or CLI option that gave ``keep``).

    Raises:
        ModelError: more layers than the model has, an index out of range, or repeated indices.

    Example:
        >>> layer_indices(30, 4)
        [0, 10, 19, 29]
    """
    if isinstance(keep, int):
        if not 1 <= keep <= num_layers:
            raise ModelError(f"{field}: {keep} layers asked, but the model has {num_layers} (give 1 to {num_layers})")
        if keep == 1:
            return [0]
        return [round(i * (num_layers - 1) / (keep - 1)) for i in range(keep)]
    bad = [i for i in keep if not 0 <= i < num_layers]
    if bad:
        raise ModelError(f"{field}: layer indices {bad} are out of range; the model has layers 0 to {num_layers - 1}")
    if len(set(keep)) != len(keep):
        raise ModelError(f"{field}: layer indices repeat in {list(keep)}; give each layer once")
    return sorted(keep)


def prune_layers(model: Any, keep: int | list[int], *, field: str = "model.keep_layers") -> list[int]:
    """Drop the decoder layers of ``model`` not in ``keep``, in place; return the kept original indices.

    Fixes what a layer count touches: ``config.num_hidden_layers``, per-layer config lists
    (``layer_types`` and any other list with one entry per layer), and the ``layer_idx`` each
    attention module uses to find its slot in the KV cache (left as it was, layer 29 would
    write into slot 29 of a 15-slot cache).

    Raises:
        ModelError: the model has no ``model.layers`` list, or ``keep`` does not fit it.
    """
    import torch

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ModelError(f"{field}: cannot find the decoder layers of {type(model).__name__} (no model.layers list)")
    old = len(layers)
    kept = layer_indices(old, keep, field=field)
    decoder.layers = torch.nn.ModuleList([layers[i] for i in kept])
    for new_idx, layer in enumerate(decoder.layers):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    config = model.config
    for name, value in list(vars(config).items()):
        # layer_types (sliding/full attention), and any other per-layer list some architecture adds.
        if isinstance(value, list) and len(value) == old and name != "architectures":
            setattr(config, name, [value[i] for i in kept])
    config.num_hidden_layers = len(kept)
    if decoder.config is not config:
        decoder.config.num_hidden_layers = len(kept)
    return kept


def prune(model_ref: str | Path, keep: int | list[int], output: str | Path, *, overwrite: bool = False,
          trust_remote_code: bool = False) -> Path:
    """Write a depth-pruned copy of a model (a run's adapter folded in first) as a plain Hugging Face folder.

    Args:
        model_ref: A run directory, PEFT adapter folder, model folder or alias.
        keep: Layers to keep: a count (evenly spread) or indices.
        output: The folder to write (safetensors, config, tokenizer, generation config).
        overwrite: Replace an existing folder that tuneforge did not write.
        trust_remote_code: Run custom model code shipped with the model.

    Returns:
        ``output``.

    Raises:
        ModelError: ``keep`` does not fit the model.
        ExportError: nothing loadable at ``model_ref``, or an output that must not be written.

    Example:
        >>> prune("smollm2-135m-instruct", 15, "models/smollm2-15l")  # doctest: +SKIP
    """
    from tuneforge.export.merging import check_merge_output, find_source, load_merged, save_model
    from tuneforge.export.output import atomic_folder

    source = find_source(model_ref)
    check_merge_output(source, output, overwrite=overwrite)  # before the slow load
    model, tokenizer, base_path = load_merged(source, trust_remote_code=trust_remote_code)
    old = model.config.num_hidden_layers
    kept = prune_layers(model, keep, field="--keep-layers")
    provenance = {"source": str(source.path.resolve()), "kind": source.kind, "base_model": str(base_path),
                  "pruned_from_layers": old, "kept_layers": kept}
    with atomic_folder(output, "prune") as folder:
        save_model(model, tokenizer, folder, provenance)
    return Path(output)
