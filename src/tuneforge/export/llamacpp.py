"""Run an exported GGUF in llama.cpp itself and compare its greedy tokens with transformers'.

The round trip in :mod:`tuneforge.export.roundtrip` reads the GGUF back with
transformers' own reader; this check loads it in llama.cpp (through
``llama-cpp-python``, the ``interop`` extra), the runtime users actually serve
GGUF files with, so it also covers what only llama.cpp reads: the
pre-tokenizer name, the token types, the chat template and the stop token.

For each prompt both sides decode greedily from the same prompt tokens; where
they first disagree, the transformers logits of the two candidate tokens are
compared: a gap below ``tie_tolerance`` is a near-tie that weight rounding may
flip, anything larger is a real difference. A chat completion then goes
through ``create_chat_completion`` with the chat template stored in the GGUF
and must end at the end-of-turn token.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.errors import ExportError


def llama_cpp_available() -> bool:
    """Whether ``llama_cpp`` (``pip install 'tuneforge[interop]'``) can be imported."""
    return importlib.util.find_spec("llama_cpp") is not None


@dataclass(frozen=True)
class TokenCheck:
    """One prompt's greedy tokens from transformers and from llama.cpp."""

    prompt: str
    reference_ids: list[int]
    llamacpp_ids: list[int]
    reference: str
    llamacpp: str
    same_prompt_tokens: bool
    """Whether llama.cpp's tokenizer turned the rendered prompt into transformers' ids."""
    agreed: int
    """How many leading tokens are the same."""
    compared: int
    """How many tokens were compared: ``n_tokens``, or fewer when transformers stopped earlier."""
    reference_gap: float | None = None
    """At the first difference: transformers' logit of its own token minus that of llama.cpp's token."""
    llamacpp_gap: float | None = None
    """At the first difference: llama.cpp's logit of its own token minus that of transformers' token."""
    near_tie: bool = False
    """The first difference is a near-tie: ``reference_gap`` is below the tolerance."""

    @property
    def agrees(self) -> bool:
        return self.same_prompt_tokens and self.agreed >= self.compared

    @property
    def verdict(self) -> str:
        if self.agrees:
            return "same"
        if not self.same_prompt_tokens:
            return "prompt tokenized differently"
        kind = "near-tie" if self.near_tie else "differs"
        return f"{kind} at token {self.agreed + 1} (logit gap {self.reference_gap:.3g} in transformers)"


@dataclass(frozen=True)
class ChatCheck:
    """A chat completion through llama.cpp with the chat template stored in the GGUF."""

    messages: list[dict]
    answer: str
    finish_reason: str
    chat_format: str
    """The chat handler llama-cpp-python picked (``chatml`` or ``chat_template.default``)."""
    same_prompt: bool
    """Whether the GGUF's template rendered the messages exactly as the transformers tokenizer does."""
    stop: list[str]
    """The stop strings llama.cpp's chat handler uses."""
    reference_answer: str
    """What the transformers model answers to the same messages (greedy)."""

    @property
    def stopped_at_end_of_turn(self) -> bool:
        return self.finish_reason == "stop"


@dataclass(frozen=True)
class LlamaCppReport:
    """How llama.cpp's greedy decoding of a GGUF compares with transformers' on the same prompts."""

    gguf: Path
    n_tokens: int
    checks: list[TokenCheck] = field(default_factory=list)
    chat: ChatCheck | None = None

    @property
    def prompts_agreeing(self) -> int:
        return sum(c.agrees for c in self.checks)

    @property
    def token_agreement(self) -> float:
        """Leading tokens agreed over tokens compared, summed over prompts."""
        compared = sum(c.compared for c in self.checks)
        return sum(min(c.agreed, c.compared) for c in self.checks) / compared if compared else 1.0

    @property
    def explained(self) -> bool:
        """Every prompt agrees on its first ``n_tokens`` tokens, or first differs on a measured near-tie."""
        return all(c.agrees or (c.same_prompt_tokens and c.near_tie) for c in self.checks)

    def summary(self) -> str:
        chat = ""
        if self.chat is not None:
            chat = f"; chat: {'stopped at end of turn' if self.chat.stopped_at_end_of_turn else 'did NOT stop'}"
        return (
            f"llama.cpp: {self.prompts_agreeing}/{len(self.checks)} prompts agree on the first {self.n_tokens} "
            f"greedy tokens with transformers, {self.token_agreement:.1%} of tokens{chat}"
        )

    def table(self) -> str:
        """A Markdown table, one row per prompt."""
        rows = ["| prompt | tokens agreeing | verdict | transformers | llama.cpp |", "|---|---|---|---|---|"]
        for c in self.checks:
            rows.append(f"| {c.prompt[:40]!r} | {c.agreed}/{c.compared} | {c.verdict} | {c.reference!r} | {c.llamacpp!r} |")
        return "\n".join(rows)


def _load_llama(gguf_path: Path, n_ctx: int) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError as exc:
        raise ExportError(
            "the llama.cpp check needs llama-cpp-python: pip install 'tuneforge[interop]' (it builds from source)"
        ) from exc
    try:
        return Llama(model_path=str(gguf_path), n_ctx=n_ctx, logits_all=False, verbose=False)
    except Exception as exc:  # llama-cpp-python raises ValueError/RuntimeError for files llama.cpp refuses
        raise ExportError(f"llama.cpp cannot load {gguf_path}: {exc}") from exc


def _last_logits(llm: Any) -> Any:
    """The logits llama.cpp computed for the last evaluated token (a copy: the buffer is reused)."""
    import numpy as np
    from llama_cpp import llama_get_logits_ith

    return np.ctypeslib.as_array(llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()


def _llamacpp_greedy(llm: Any, prompt_ids: list[int], n_tokens: int, stops: set[int]) -> tuple[list[int], list[Any]]:
    """Greedy tokens after ``prompt_ids`` (stopping after a stop token) and the logits behind each."""
    llm.reset()
    llm.eval(prompt_ids)
    tokens, logits = [], []
    for _ in range(n_tokens):
        row = _last_logits(llm)
        token = int(row.argmax())
        tokens.append(token)
        logits.append(row)
        if token in stops:
            break
        llm.eval([token])
    return tokens, logits


def _compare(prompt: str, ref_ids: list[int], ref_logits: Any, cpp_ids: list[int], cpp_logits: list[Any],
             same_prompt: bool, n_tokens: int, tie_tolerance: float, decode: Any) -> TokenCheck:
    compared = min(n_tokens, len(ref_ids))
    agreed = next((i for i, (a, b) in enumerate(zip(ref_ids, cpp_ids)) if a != b), min(len(ref_ids), len(cpp_ids)))
    ref_gap = cpp_gap = None
    if agreed < compared and agreed < len(cpp_ids):
        mine, theirs = ref_ids[agreed], cpp_ids[agreed]
        ref_gap = float(ref_logits[agreed, mine] - ref_logits[agreed, theirs])
        cpp_gap = float(cpp_logits[agreed][theirs] - cpp_logits[agreed][mine])
    return TokenCheck(
        prompt=prompt, reference_ids=ref_ids, llamacpp_ids=cpp_ids,
        reference=decode(ref_ids), llamacpp=decode(cpp_ids), same_prompt_tokens=same_prompt,
        agreed=agreed, compared=compared, reference_gap=ref_gap, llamacpp_gap=cpp_gap,
        near_tie=ref_gap is not None and ref_gap < tie_tolerance,
    )


def _chat_check(llm: Any, model: Any, tokenizer: Any, messages: list[dict], max_tokens: int) -> ChatCheck:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from tuneforge.eval.generate import stop_token_ids
    from tuneforge.export.roundtrip import _generate

    # Render with the template llama.cpp read from the file, as its chat handler does, to see the
    # prompt it builds (create_chat_completion does not return it).
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    formatter = Jinja2ChatFormatter(
        template=llm.metadata.get("tokenizer.chat_template", ""),
        eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
    )
    rendered = formatter(messages=messages)
    reference_prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    llm.reset()
    reply = llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0)
    choice = reply["choices"][0]
    ref_ids, _ = _generate(model, tokenizer, [tokenizer(reference_prompt, add_special_tokens=False)["input_ids"]],
                           max_tokens)
    stops = stop_token_ids(tokenizer, model)
    return ChatCheck(
        messages=messages, answer=choice["message"]["content"] or "", finish_reason=choice["finish_reason"],
        chat_format=str(llm.chat_format), same_prompt=rendered.prompt == reference_prompt,
        stop=list(rendered.stop or []),
        reference_answer=tokenizer.decode([t for t in ref_ids[0] if t not in stops], skip_special_tokens=True),
    )


def _chat_ids(tokenizer: Any, messages: list[dict]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False))


def check_llamacpp(
    merged_dir: str | Path, gguf_path: str | Path, prompts: list[str | list[dict]] | tuple[str, ...], *,
    n_tokens: int = 16, tie_tolerance: float = 0.05, chat: list[dict] | None = None, chat_max_tokens: int = 32,
) -> LlamaCppReport:
    """Load a GGUF in llama.cpp and compare its greedy tokens with the transformers model it came from.

    Args:
        merged_dir: The reference Hugging Face folder (the merged model).
        gguf_path: The exported ``.gguf`` file.
        prompts: User messages, or whole conversations (lists of messages) that end before the answer, each
            rendered with the chat template (user messages without one: as they are).
        n_tokens: Greedy tokens compared per prompt.
        tie_tolerance: At the first differing token, a transformers logit gap below this counts as a near-tie.
        chat: Messages for one ``create_chat_completion`` call (default: the first prompt as a user turn).
        chat_max_tokens: The chat completion's ``max_tokens``.

    Returns:
        A :class:`LlamaCppReport`: per-prompt agreement and the chat completion.

    Raises:
        ExportError: llama-cpp-python is not installed, or llama.cpp cannot load the file.

    Example:
        >>> report = check_llamacpp("runs/demo/merged", "runs/demo/export/gguf/model-f16.gguf", ["Hi"])
        >>> report.explained, report.chat.stopped_at_end_of_turn
        (True, True)
    """
    from tuneforge.eval.generate import stop_token_ids
    from tuneforge.export.roundtrip import _generate, _prompt_ids, check_inputs
    from tuneforge.models import load_model

    gguf_path, prompts = check_inputs(gguf_path, prompts, "check_llamacpp")
    model, tokenizer, _ = load_model(str(merged_dir))
    model.eval()
    stops = set(stop_token_ids(tokenizer, model))
    ref_prompts = [_chat_ids(tokenizer, p) if isinstance(p, list) else _prompt_ids(tokenizer, p) for p in prompts]
    llm = _load_llama(gguf_path, n_ctx=max(len(p) for p in ref_prompts) + max(n_tokens, chat_max_tokens) + 256)
    checks = []
    for prompt, ids in zip(prompts, ref_prompts):
        prompt = prompt if isinstance(prompt, str) else prompt[-1]["content"]
        # One prompt per batch: left padding would change transformers' numerics slightly.
        (ref_ids,), ref_logits = _generate(model, tokenizer, [ids], n_tokens)
        text = tokenizer.decode(ids)
        same_prompt = llm.tokenize(text.encode(), add_bos=False, special=True) == ids
        cpp_ids, cpp_logits = _llamacpp_greedy(llm, ids, n_tokens, stops)
        checks.append(_compare(prompt, ref_ids, ref_logits[0], cpp_ids, cpp_logits, same_prompt, n_tokens,
                               tie_tolerance, lambda t: tokenizer.decode(t, skip_special_tokens=True)))
    chat_check = None
    if tokenizer.chat_template:
        first = prompts[0]
        messages = chat if chat is not None else first if isinstance(first, list) else [{"role": "user", "content": first}]
        chat_check = _chat_check(llm, model, tokenizer, messages, chat_max_tokens)
    llm.close()
    return LlamaCppReport(gguf_path, n_tokens, checks, chat_check)
