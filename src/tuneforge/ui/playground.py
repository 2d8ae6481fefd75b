"""The playground: one prompt, two answers (a run's base and tuned model, or any two runs) streamed side by side.

Generation goes through ``tuneforge serve``'s :class:`~tuneforge.serve.engine.Engine`
(same chat template, batching, stop tokens and sampling), so what the playground
shows is what the served model answers. Adapter runs over one base share one engine,
holding the base weights once (as ``tuneforge serve BASE --adapter ...`` does); engines
load on the first prompt, not when the dashboard starts.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.rundir import RunDir
from tuneforge.ui.events import sse
from tuneforge.ui.paths import run_path
from tuneforge.ui.runs import list_runs, read_yaml

BASE = "base"  # the served name of the bare base model in every engine


class PlaygroundRequest(BaseModel):
    """One side of a playground prompt, as the browser posts it (validated like any other input)."""

    model_config = ConfigDict(extra="forbid")
    run: str = Field(description="The run whose model answers.")
    side: Literal["base", "tuned"] = Field(description="The run's base model or its tuned weights.")
    prompt: str = Field(min_length=1, max_length=20_000)
    max_tokens: int = Field(128, ge=1, le=2048)
    temperature: float = Field(0.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


@dataclass(frozen=True)
class Choice:
    """A run the playground can ask: its name, base model and whether its weights are an adapter."""

    run: str
    base: str
    adapter: bool


def choices(runs_dir: Path) -> list[Choice]:
    """Every run with trained weights (``adapter/`` or ``model/``) and a base model named in its config."""
    out = []
    for summary in list_runs(runs_dir):
        run = RunDir(Path(runs_dir) / summary.name)
        model = (read_yaml(runs_dir, run.config) or {}).get("model") or {}
        base = model.get("name_or_path") if isinstance(model, dict) else None
        if isinstance(base, str) and (run.adapter.is_dir() or run.model.is_dir()):
            out.append(Choice(summary.name, base, run.adapter.is_dir()))
    return out


class Playground:
    """Engines for the runs asked about, loaded on first use and closed with the app."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = Path(runs_dir)
        self._lock = threading.Lock()
        self._engines: dict[str, Any] = {}

    def engine_for(self, run: str, side: str) -> tuple[Any, str]:
        """``(engine, served name)`` answering for ``run``'s ``side`` (blocking: may load a model).

        Raises:
            SecurityError: the run name leaves the runs folder.
            ModelError: the run has no weights, or they cannot be loaded.
        """
        from tuneforge.errors import ModelError
        from tuneforge.models import load
        from tuneforge.serve.engine import Engine, load_engine

        folder = run_path(self.runs_dir, run)
        found = {c.run: c for c in choices(self.runs_dir)}
        if run not in found:
            raise ModelError(f"run {run!r} has no trained weights (adapter/ or model/) and base model to answer with")
        choice = found[run]
        if side == "tuned" and not choice.adapter:  # full fine-tune: its own model, its own engine
            key, name = f"run:{run}", run
            make = lambda: load_engine(folder, name=run)  # noqa: E731
        else:
            # Every adapter run over this base rides one engine; the base answers as BASE.
            adapters = {c.run: Path(self.runs_dir) / c.run for c in found.values() if c.adapter and c.base == choice.base}
            key, name = f"base:{choice.base}", BASE if side == "base" else run
            make = lambda: Engine(load(choice.base), name=BASE, adapters=adapters)  # noqa: E731
        with self._lock:
            engine = self._engines.get(key)
            if engine is None or name not in engine.routes:  # first use, or a run finished since it loaded
                if engine is not None:
                    engine.close()
                engine = self._engines[key] = make()
            return engine, name

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()


async def answer_events(engine: Any, name: str, request: PlaygroundRequest) -> AsyncIterator[str]:
    """The answer as server-sent events: ``delta`` text pieces, then ``done`` (or ``error``)."""
    from tuneforge.serve.batcher import GenerationRequest, SamplingParams
    from tuneforge.serve.decode import Delta, Finished

    try:
        prompt_ids = engine.encode_chat([{"role": "user", "content": request.prompt}])
    except Exception as exc:  # noqa: BLE001  (jinja raises its own errors for prompts a template refuses)
        yield sse({"message": f"cannot apply the model's chat template: {exc}"}, event="error")
        return
    params = SamplingParams(max_tokens=request.max_tokens, temperature=request.temperature, top_p=request.top_p,
                            seed=request.seed)
    handle = engine.submit(GenerationRequest(name, [prompt_ids], params))
    try:
        async for event in handle.stream():
            if isinstance(event, Delta) and event.text:
                yield sse({"text": event.text}, event="delta")
            elif isinstance(event, Finished):
                yield sse({"finish_reason": event.finish_reason, "tokens": event.completion_tokens}, event="done")
    except Exception as exc:  # noqa: BLE001  (a failed batch ends this answer with its reason, not a broken stream)
        yield sse({"message": str(exc)}, event="error")
    finally:
        handle.cancel()  # the browser went away or the answer ended: free the row either way
