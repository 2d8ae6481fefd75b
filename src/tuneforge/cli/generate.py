"""`tuneforge generate` (one-shot prompts) and `tuneforge chat` (interactive, streamed)."""

from __future__ import annotations

import typer

from tuneforge.cli.options import trust_remote_code_option, warn_trust_remote_code

_TARGET_HELP = "A run directory (runs/NAME), an adapter or model folder, a .gguf file, or a model alias."


def generate(
    target: str = typer.Argument(..., help=_TARGET_HELP, show_default=False),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="A user message (repeatable: answered as a batch)."),
    system: str = typer.Option(None, "--system", help="System message (default: the chat template's own)."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens", help="Tokens generated at most."),
    temperature: float = typer.Option(0.0, "--temperature", help="0 = greedy decoding; above 0 samples."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling threshold (when sampling)."),
    seed: int = typer.Option(42, "--seed", help="Sampling seed."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> int:
    """Answer one or more prompts with a model or a fine-tuned run."""
    from tuneforge.config.schema import GenerationConfig
    from tuneforge.data.prompts import render_prompt
    from tuneforge.eval.generate import generate_texts
    from tuneforge.models import load

    warn_trust_remote_code(trust_remote_code, target)
    loaded = load(target, trust_remote_code=trust_remote_code)
    prefix = [{"role": "system", "content": system}] if system else []
    prompts = [render_prompt(prefix + [{"role": "user", "content": p}], loaded.tokenizer) for p in prompt]
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                           temperature=temperature or 1.0, top_p=top_p, batch_size=len(prompt))
    answers = generate_texts(loaded.model, loaded.tokenizer, prompts, gen, seed=seed)
    for p, answer in zip(prompt, answers.texts):
        if len(prompt) > 1:
            typer.echo(f"> {p}")
        typer.echo(answer)
    return 0


def chat(
    target: str = typer.Argument(..., help=_TARGET_HELP, show_default=False),
    system: str = typer.Option(None, "--system", help="System message (default: the chat template's own)."),
    max_new_tokens: int = typer.Option(512, "--max-new-tokens", help="Tokens generated at most per answer."),
    temperature: float = typer.Option(0.7, "--temperature", help="0 = greedy decoding."),
    top_p: float = typer.Option(0.95, "--top-p", help="Nucleus sampling threshold."),
    trust_remote_code: bool = trust_remote_code_option(),
) -> int:
    """Chat with a model or a fine-tuned run in the terminal (/reset clears the history, /exit or Ctrl-D quits)."""
    import torch
    from transformers import TextStreamer

    from tuneforge.data.prompts import encode_prompt, stop_token_ids
    from tuneforge.models import load

    warn_trust_remote_code(trust_remote_code, target)
    loaded = load(target, trust_remote_code=trust_remote_code)
    model, tok = loaded.model.eval(), loaded.tokenizer
    history: list[dict] = [{"role": "system", "content": system}] if system else []
    start = list(history)
    typer.echo(f"chatting with {target} (/reset, /exit)")
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            return 0
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            history = list(start)
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        # Rendered as in training: the chat template, or the fallback format of a model without one.
        ids = torch.tensor([encode_prompt(history, tok)])
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        typer.echo("model> ", nl=False)
        with torch.inference_mode():
            out = model.generate(
                **enc, streamer=streamer, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None, top_p=top_p if temperature > 0 else None,
                top_k=None, eos_token_id=stop_token_ids(tok, model), pad_token_id=tok.pad_token_id,
            )
        answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        history.append({"role": "assistant", "content": answer})
