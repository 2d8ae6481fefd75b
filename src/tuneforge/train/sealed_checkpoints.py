"""Checkpoints of an encrypted run, written and read through the run's sealer in memory: never a plaintext file.

transformers' ``Trainer`` writes a checkpoint itself: the weights with ``save_pretrained``
(safetensors, in Rust) and the optimizer, scheduler, scaler, RNG states and training arguments
with ``torch.save`` (in C++), each straight to a path; it reads them back with ``torch.load`` and
``load_adapter``/``load_file``. Neither library takes a file object or a storage hook for these,
so for an encrypted run :func:`seal_checkpoints` gives the trainer (ours or any TRL trainer) the
:class:`SealedCheckpoints` mixin, which:

- saves the weights with :func:`tuneforge.models.sealed.save_sealed` (serialized to bytes,
  encrypted, written atomically);
- runs the Trainer's own ``_save_*`` / ``_load_*`` methods with ``torch.save`` / ``torch.load``
  redirected to bytes in memory that the sealer encrypts (or :func:`read_file` decrypts), so
  whatever state the Trainer (or a TRL subclass) chooses to save is still saved, in its own
  format, but only ever as ciphertext on disk;
- resumes by putting the decrypted tensors into the live model (no decrypted copy on disk).

FSDP and DeepSpeed write sharded checkpoints through their own engines; an encrypted run refuses
them with a clear error rather than leaving plaintext shards behind.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from tuneforge.errors import ConfigError
from tuneforge.models.sealed import ADAPTER_WEIGHTS, MODEL_WEIGHTS, is_sealed, load_state, put_state, save_sealed
from tuneforge.security.at_rest import Sealer, read_file
from tuneforge.security.crypto import is_encrypted

TRAINING_ARGS = "training_args.bin"


@contextlib.contextmanager
def sealed_torch_io(sealer: Sealer) -> Iterator[None]:
    """``torch.save`` to a path writes through ``sealer``; ``torch.load`` of an encrypted path decrypts in memory.

    The Trainer calls ``torch.save``/``torch.load`` through the ``torch`` module, so swapping the
    two attributes for the duration of one of its ``_save_*``/``_load_*`` calls reaches every file
    it writes there. File objects and buffers pass through unchanged.
    """
    save, load = torch.save, torch.load

    def sealed_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(f, (str, os.PathLike)):
            return save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        save(obj, buffer, *args, **kwargs)
        sealer.write_bytes(Path(f), buffer.getvalue())
        return None

    def sealed_load(f: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, os.PathLike)) and is_encrypted(Path(f)):
            f = io.BytesIO(read_file(Path(f), sealer.key, expected_name=sealer.name(Path(f))))
        return load(f, *args, **kwargs)

    torch.save, torch.load = sealed_save, sealed_load
    try:
        yield
    finally:
        torch.save, torch.load = save, load


class SealedCheckpoints:
    """Mixin (first in the MRO) for a ``transformers.Trainer`` subclass of an encrypted run; see the module docstring."""

    sealer: Sealer

    # ----------------------------------------------------------------- writing
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        if not self.args.should_save:
            return
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        save_sealed(model, folder, self.sealer, self.sealer.name(folder))
        if self.processing_class is not None:
            self.processing_class.save_pretrained(str(folder))
        with sealed_torch_io(self.sealer):
            torch.save(self.args, folder / TRAINING_ARGS)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        with sealed_torch_io(self.sealer):
            super()._save_optimizer_and_scheduler(output_dir)

    def _save_scaler(self, output_dir: str) -> None:
        with sealed_torch_io(self.sealer):
            super()._save_scaler(output_dir)

    def _save_rng_state(self, output_dir: str) -> None:
        with sealed_torch_io(self.sealer):
            super()._save_rng_state(output_dir)

    # ----------------------------------------------------------------- reading
    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        folder = Path(resume_from_checkpoint)
        if not is_sealed(folder):  # a checkpoint written before this run was encrypted
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        model = self.accelerator.unwrap_model(model if model is not None else self.model, keep_torch_compile=False)
        name = ADAPTER_WEIGHTS if (folder / ADAPTER_WEIGHTS).is_file() else MODEL_WEIGHTS
        state = load_state(folder / name, self.sealer.key, expected_name=self.sealer.name(folder / name))
        put_state(model, state, folder)
        return None

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        if best and is_sealed(best):
            self._load_from_checkpoint(best)
        else:
            super()._load_best_model()

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        with sealed_torch_io(self.sealer):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_scaler(self, checkpoint: str | None) -> None:
        with sealed_torch_io(self.sealer):
            super()._load_scaler(checkpoint)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        with sealed_torch_io(self.sealer):
            super()._load_rng_state(checkpoint)


def seal_checkpoints(trainer: Any, sealer: Sealer) -> Any:
    """Make ``trainer`` (any ``Trainer`` subclass, TRL's included) write and read its checkpoints through ``sealer``.

    The instance gets a subclass of its own class with :class:`SealedCheckpoints` first, so the
    Trainer's (and TRL's) own saving logic runs unchanged around the sealed file I/O.

    Raises:
        ConfigError: FSDP or DeepSpeed is on (their engines write checkpoint shards themselves).
    """
    if getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False):
        raise ConfigError(
            "security.encrypt: FSDP and DeepSpeed write their checkpoint shards themselves, in plaintext; "
            "train an encrypted run with DDP or one process, or switch security.encrypt off"
        )
    cls = type(trainer)
    if not issubclass(cls, SealedCheckpoints):
        trainer.__class__ = type(f"Sealed{cls.__name__}", (SealedCheckpoints, cls), {})
    trainer.sealer = sealer
    return trainer
