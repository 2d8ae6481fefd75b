"""The serving engine: one base model, any number of LoRA adapters over it, and batched generation.

Each served model name maps to a PEFT adapter of one :class:`peft.PeftModel`
(or to the bare base, run under ``disable_adapter()``), as vLLM and LoRAX do:
one copy of the base weights in memory whatever the number of adapters. A
batch only ever holds requests for one name (it is part of the batch key), so
switching adapters between batches with ``set_adapter`` is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from tuneforge.data.prompts import encode_prompt, stop_token_ids
from tuneforge.errors import ModelError, TuneforgeError
from tuneforge.models import ALIASES, LoadedModel, load, resolve
from tuneforge.models.sealed import attach_adapter
from tuneforge.security.model_files import check_weight_files
from tuneforge.serve.batcher import Batcher, BatchingConfig, GenerationHandle, GenerationRequest
from tuneforge.serve.continuous import ContinuousBatcher
from tuneforge.serve.decode import BatchTracker, Row

log = logging.getLogger("tuneforge.serve")


def served_name(target: str | Path) -> str:
    """The name a model is served under: an alias or hub id as is, else the run or folder name.

    Example:
        >>> served_name("smollm2-135m-instruct")
        'smollm2-135m-instruct'
        >>> served_name("runs/support-bot/adapter")  # doctest: +SKIP
        'support-bot'
    """
    if str(target) in ALIASES or not Path(target).exists():
        return str(target)
    path = Path(target).resolve()
    return path.parent.name if path.name in ("adapter", "model") else path.name


def adapter_dir(target: str | Path) -> Path:
    """The PEFT adapter folder of a run directory or adapter folder.

    Raises:
        ModelError: ``target`` holds no adapter.
    """
    from tuneforge.models import resolve_target

    path = Path(target)
    try:
        found = resolve_target(path)
    except ModelError:
        found = None  # not loadable at all: the message below says what an adapter must be
    if found is not None and found.kind == "run":
        if not found.run.adapter.is_dir():
            raise ModelError(f"run {path} trained the full model, it has no adapter; serve it on its own")
        return found.run.adapter
    if found is not None and found.kind == "adapter":
        return path
    raise ModelError(f"adapter not found: {path} is neither a run directory nor a folder with adapter_config.json")


class Engine:
    """A loaded model with its adapters, fed by a :class:`~tuneforge.serve.batcher.Batcher`.

    Args:
        loaded: The model to serve (from :func:`tuneforge.models.load`).
        name: Name of the loaded model as given (with its own adapter, if any).
        adapters: Extra served names -> run directories or adapter folders, loaded over the same base.
        batching: Dynamic batching settings.
        device: Where to run; default CUDA when available, else CPU.

    Raises:
        ModelError: an adapter is missing, named twice, or does not fit the base model.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        name: str,
        adapters: Mapping[str, str | Path] | None = None,
        batching: BatchingConfig | None = None,
        device: str | None = None,
    ):
        from peft import PeftModel

        self.tokenizer = loaded.tokenizer
        self.base_path = loaded.base_path
        model = loaded.model
        # served name -> PEFT adapter name; None is the bare base model.
        self.routes: dict[str, str | None] = {
            name: model.active_adapter if isinstance(model, PeftModel) else None
        }
        for adapter_name, target in (adapters or {}).items():
            if adapter_name in self.routes or adapter_name in getattr(model, "peft_config", {}):
                raise ModelError(f"--adapter {adapter_name}: the name is already served; pick another")
            path = adapter_dir(target)
            check_weight_files(path)  # an extra adapter's pickle file is refused like the model's
            self._check_base(adapter_name, path)
            try:  # an encrypted run's adapter is decrypted in memory; a bottleneck one may go over a LoRA or bare base
                model = attach_adapter(model, path, adapter_name)
            except TuneforgeError:
                raise  # a missing or wrong key, or a modified file: the message names it
            except Exception as exc:  # peft raises many kinds (shape mismatch, bad config)
                raise ModelError(f"--adapter {adapter_name}: cannot load {path} over {self.base_path}: {exc}") from exc
            self.routes[adapter_name] = adapter_name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.primary = name
        self.eos_ids = self._eos_ids()
        self.context_length = getattr(self.model.config, "max_position_embeddings", None)
        # Fast tokenizers share one Rust object; encoding (event loop) and decoding (worker) must not overlap.
        self.tokenizer_lock = threading.Lock()
        batching = batching or BatchingConfig()
        self.batcher = (
            ContinuousBatcher(self._forward, self._tracker, batching, self.device)
            if _continuous(batching, self.model) else Batcher(self._run_batch, batching)
        )
        self._static_cancelled_rows = 0

    @property
    def stats(self) -> dict[str, int]:
        """Rows cancelled because their client went away."""
        continuous = getattr(self.batcher, "cancelled_rows", 0)
        return {"cancelled_rows": self._static_cancelled_rows + continuous}

    @property
    def names(self) -> list[str]:
        """Every served model name, the loaded model first."""
        return list(self.routes)

    def _check_base(self, adapter_name: str, path: Path) -> None:
        base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if base is None or base == self.base_path:
            return
        try:  # the adapter may name its base by alias or by another path to the same folder
            same = Path(resolve(base)).resolve() == Path(self.base_path).resolve()
        except ModelError:
            same = False
        if not same:
            log.warning("adapter %s was trained on %s but the served base is %s", adapter_name, base, self.base_path)

    def _eos_ids(self) -> set[int]:
        # The same stop ids as training, eval and chat: the template's end-of-turn token too, which a
        # model whose eos is another token (<|endoftext|>) would otherwise run past.
        return set(stop_token_ids(self.tokenizer, self.model))

    # ------------------------------------------------------------------ encoding (event loop)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Render the messages as the model was trained on them (its chat template, or tuneforge's
        fallback format when it has none), with the assistant turn opened, and tokenize.

        Raises:
            DataError: the chat template rejects the messages.
        """
        with self.tokenizer_lock:
            return encode_prompt(messages, self.tokenizer)

    def encode_text(self, prompt: str) -> list[int]:
        """Tokenize a plain completion prompt as the model expects it (with its BOS, if it uses one)."""
        with self.tokenizer_lock:
            return self.tokenizer(prompt)["input_ids"]

    # ------------------------------------------------------------------ generation

    def submit(self, request: GenerationRequest) -> GenerationHandle:
        """Queue a request (call from the event loop) and return its handle.

        Raises:
            KeyError: ``request.model`` is not served here.
        """
        if request.model not in self.routes:
            raise KeyError(request.model)
        handle = GenerationHandle(request, asyncio.get_running_loop())
        self.batcher.submit(handle)
        return handle

    def close(self) -> None:
        """Stop the worker thread (after the batch in progress)."""
        self.batcher.stop()

    def _adapter_scope(self, name: str) -> contextlib.AbstractContextManager:
        adapter = self.routes[name]
        if adapter is not None:
            self.model.set_adapter(adapter)
            return contextlib.nullcontext()
        if hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def _run_batch(self, handles: list[GenerationHandle]) -> None:
        rows = [
            Row(h, i * h.request.params.n + j, prompt, h.request.params.max_tokens, h.request.params.stop)
            for h in handles
            for i, prompt in enumerate(h.request.prompts)
            for j in range(h.request.params.n)
        ]
        pad = self.tokenizer.pad_token_id
        width = max(len(r.prompt_ids) for r in rows)
        # Left padding: every row's next token is then at the same position, as generate needs.
        input_ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows], device=self.device)
        attention_mask = torch.tensor(
            [[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows], device=self.device
        )
        params = handles[0].request.params  # the batch key makes these the same across the batch
        tracker = self._tracker(rows)
        sampling: dict[str, Any] = {"do_sample": False}
        if params.temperature > 0:
            # top_k=0: the OpenAI API has no top-k, and transformers would otherwise apply 50.
            sampling = {"do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        with self._adapter_scope(handles[0].request.model), torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)  # a seeded request runs alone (batch_key), so this is its RNG
            self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max(r.max_tokens for r in rows),
                stopping_criteria=[tracker], pad_token_id=pad, eos_token_id=sorted(self.eos_ids), **sampling,
            )
        tracker.finish()
        self._static_cancelled_rows += tracker.cancelled_rows

    def _tracker(self, rows: list[Row] | None = None) -> BatchTracker:
        return BatchTracker(rows or [], self.tokenizer, self.eos_ids, self.tokenizer_lock)

    def _forward(
        self, name: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
        cache: DynamicCache | None,
    ) -> tuple[torch.Tensor, DynamicCache]:
        """One forward pass of the continuous batcher, under the adapter of served name ``name``."""
        cache = cache if cache is not None else DynamicCache(config=self.model.config)
        with self._adapter_scope(name), torch.inference_mode():
            out = self.model(  # the model appends this step's keys and values to `cache` in place
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                use_cache=True, logits_to_keep=1,  # only the next token's logits: the LM head is large
            )
        return out.logits[:, -1, :].float(), cache


def load_engine(
    target: str | Path,
    *,
    adapters: Mapping[str, str | Path] | None = None,
    name: str | None = None,
    batching: BatchingConfig | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> Engine:
    """Load a model (anything :func:`tuneforge.models.load` accepts) and its extra adapters for serving.

    Args:
        target: A run directory, adapter folder, model folder, ``.gguf`` file or alias.
        adapters: Extra served names -> run directories or adapter folders over the same base.
        name: Name to serve ``target`` under; default :func:`served_name`.
        batching: Dynamic batching settings.
        dtype: Weight dtype.
        device: Where to run; default CUDA when available, else CPU.
        trust_remote_code: Run custom model code shipped with the model (never taken from a run's config).

    Raises:
        ModelError: the model or an adapter cannot be loaded.
        SecurityError: pickle-based weights without ``model.allow_pickle``, or a pinned file that differs.

    Example:
        >>> engine = load_engine("runs/support-bot", adapters={"legal": "runs/legal"})  # doctest: +SKIP
        >>> engine.names  # doctest: +SKIP
        ['support-bot', 'legal']
    """
    loaded = load(target, dtype=dtype, trust_remote_code=trust_remote_code)
    return Engine(loaded, name=name or served_name(target), adapters=adapters, batching=batching, device=device)


def full_attention_problem(model: Any) -> str | None:
    """Why continuous batching cannot serve ``model`` (a layer without a plain KV cache), or None when it can."""
    from transformers import DynamicCache

    from tuneforge.serve.continuous import plain_layers

    try:
        cache = DynamicCache(config=model.config)
    except Exception as exc:  # a config DynamicCache cannot read: do not guess
        return f"its config does not say how to build its KV cache ({type(exc).__name__}: {exc})"
    return None if plain_layers(cache) else "it has sliding-window layers, whose cache cannot be merged row by row"


def _continuous(batching: BatchingConfig, model: Any) -> bool:
    """``batching.continuous``, with None resolved by the model; a forced True on a model it cannot serve is refused."""
    if batching.continuous is False or batching.max_batch_size == 1:
        return False
    problem = full_attention_problem(model)
    if batching.continuous and problem:
        raise ModelError(f"continuous batching needs a model with full attention in every layer, and {problem}; "
                         "serve it with --batching static")
    if problem:
        log.info("static batching: %s", problem)
    return problem is None

