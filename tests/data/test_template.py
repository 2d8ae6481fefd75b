"""Chat template rendering and answer-only labels, checked by decoding the label mask."""

from __future__ import annotations

import pytest

from tuneforge.data import end_of_turn_token, prompt_messages, reference, render_prompt, tokenize_example
from tuneforge.data.template import IGNORE_INDEX, describe_template, render_conversation
from tuneforge.errors import DataError
from tuneforge.models import build_tiny_tokenizer, load_tokenizer

CHAT = {"messages": [
    {"role": "system", "content": "You route support tickets."},
    {"role": "user", "content": "My invoice was charged twice."},
    {"role": "assistant", "content": "billing"},
    {"role": "user", "content": "And I cannot log in to my account."},
    {"role": "assistant", "content": "account\nReset your password."},
]}


def labelled_runs(tokenizer, tokens: dict) -> list[str]:
    """Decode each contiguous run of labelled tokens."""
    runs, current = [], []
    for token_id, label in zip(tokens["input_ids"], tokens["labels"]):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token_id
            current.append(label)
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def assert_answer_only_labels(tokenizer, example):
    tokens = tokenize_example(example, tokenizer, max_seq_length=512)
    answers = [m["content"] + "<|im_end|>" for m in example["messages"] if m["role"] == "assistant"]
    assert labelled_runs(tokenizer, tokens) == answers
    # The newline the template writes after <|im_end|> is not trained on.
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for i, token_id in enumerate(tokens["input_ids"][:-1]):
        if tokens["labels"][i] == end_id:
            assert tokens["labels"][i + 1] == IGNORE_INDEX
    # Exactly the tokens of the rendered text: no second BOS, nothing added.
    text = tokenizer.apply_chat_template(example["messages"], tokenize=False)
    assert tokens["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_label_mask_is_exactly_the_answers_tiny(tiny_tokenizer):
    assert_answer_only_labels(tiny_tokenizer, CHAT)


def test_label_mask_is_exactly_the_answers_smollm2(smollm2_dir):
    tokenizer = load_tokenizer(smollm2_dir)
    assert_answer_only_labels(tokenizer, CHAT)
    assert end_of_turn_token(tokenizer) == "<|im_end|>"


def test_label_mask_without_system_message_uses_template_default(tiny_tokenizer):
    example = {"messages": CHAT["messages"][1:3]}
    assert_answer_only_labels(tiny_tokenizer, example)
    assert "You are a helpful assistant." in tiny_tokenizer.decode(tokenize_example(example, tiny_tokenizer, max_seq_length=512)["input_ids"])


def test_end_of_turn_token(tiny_tokenizer):
    assert end_of_turn_token(tiny_tokenizer) == "<|im_end|>"
    assert "<|im_end|>" in describe_template(tiny_tokenizer)


def test_end_of_turn_token_falls_back_to_eos_when_template_writes_none():
    tok = build_tiny_tokenizer()
    tok.eos_token = "<|endoftext|>"
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    assert end_of_turn_token(tok) == "<|endoftext|>"


def _custom_template_tokenizer():
    """A template that starts with BOS and a tokenizer that also adds BOS on encode."""
    from tokenizers import processors

    tok = build_tiny_tokenizer()
    bos = tok.convert_tokens_to_ids("<|endoftext|>")
    tok.bos_token = "<|endoftext|>"
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    tok.chat_template = (
        "{{ bos_token }}{% for m in messages %}### {{ m['role'] }}:\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}### assistant:\n{% endif %}"
    )
    return tok, bos


def test_no_second_bos_and_labels_with_another_template():
    tok, bos = _custom_template_tokenizer()
    assert tok("hi")["input_ids"][0] == bos  # the tokenizer would add a BOS of its own
    tokens = tokenize_example(CHAT, tok, max_seq_length=512)
    assert tokens["input_ids"][0] == bos and tokens["input_ids"].count(bos) == 1
    assert labelled_runs(tok, tokens) == ["billing<|im_end|>", "account\nReset your password.<|im_end|>"]
    assert end_of_turn_token(tok) == "<|im_end|>"


def test_fallback_format_without_chat_template():
    tok = build_tiny_tokenizer()
    tok.chat_template = None
    text, spans = render_conversation(CHAT["messages"][:3], tok)
    assert text == (
        "### System:\nYou route support tickets.\n\n### User:\nMy invoice was charged twice.\n\n"
        "### Assistant:\nbilling<|im_end|>\n\n"
    )
    assert [text[a:b] for a, b in spans] == ["billing<|im_end|>"]
    tokens = tokenize_example(CHAT, tok, max_seq_length=512)
    assert labelled_runs(tok, tokens) == ["billing<|im_end|>", "account\nReset your password.<|im_end|>"]
    assert end_of_turn_token(tok) == "<|im_end|>"
    assert "fallback" in describe_template(tok)
    assert render_prompt(CHAT["messages"][:2], tok).endswith("### User:\nMy invoice was charged twice.\n\n### Assistant:\n")


def test_template_that_rewrites_history_is_refused():
    tok = build_tiny_tokenizer()
    # Like templates that strip reasoning from earlier turns: turn 2's text changes once turn 4 exists.
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
        "{% if m['role'] == 'assistant' and not loop.last %} (earlier){% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(DataError, match="does not render conversations prefix by prefix"):
        tokenize_example(CHAT, tok, max_seq_length=512)


def test_template_errors_become_data_errors():
    tok = build_tiny_tokenizer()
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(DataError, match="cannot render this conversation: roles must alternate"):
        tokenize_example(CHAT, tok, max_seq_length=512)


def test_raw_text_is_trained_on_every_token_with_eos(tiny_tokenizer):
    tokens = tokenize_example({"text": "The quick brown fox."}, tiny_tokenizer, max_seq_length=512)
    assert tokens["labels"] == tokens["input_ids"]
    assert tokens["input_ids"][-1] == tiny_tokenizer.eos_token_id
    assert tiny_tokenizer.decode(tokens["input_ids"]) == "The quick brown fox.<|im_end|>"


def test_too_long_drop_and_truncate(tiny_tokenizer):
    example = {"messages": [{"role": "user", "content": "short"}, {"role": "assistant", "content": "a long answer " * 20}]}
    full = tokenize_example(example, tiny_tokenizer, max_seq_length=10_000)
    limit = len(full["input_ids"]) - 5
    assert tokenize_example(example, tiny_tokenizer, max_seq_length=limit) is None
    cut = tokenize_example(example, tiny_tokenizer, max_seq_length=limit, too_long="truncate")
    assert cut["input_ids"] == full["input_ids"][:limit] and cut["labels"] == full["labels"][:limit]
    assert any(label != IGNORE_INDEX for label in cut["labels"])
    # A prompt that fills the whole window leaves no answer: dropped even when truncating.
    long_prompt = {"messages": [{"role": "user", "content": "question " * 200}, {"role": "assistant", "content": "ok"}]}
    assert tokenize_example(long_prompt, tiny_tokenizer, max_seq_length=64, too_long="truncate") is None


def test_prompt_messages_and_reference():
    assert prompt_messages(CHAT) == CHAT["messages"][:4]
    assert reference(CHAT) == "account\nReset your password."
    trailing = {"messages": [*CHAT["messages"], {"role": "user", "content": "thanks"}]}
    assert reference(trailing) == "account\nReset your password." and len(prompt_messages(trailing)) == 4
    with pytest.raises(DataError, match="raw text example has no prompt"):
        prompt_messages({"text": "t"})


def test_render_prompt_ends_with_generation_prompt(tiny_tokenizer):
    assert render_prompt(prompt_messages(CHAT), tiny_tokenizer).endswith(
        "<|im_start|>user\nAnd I cannot log in to my account.<|im_end|>\n<|im_start|>assistant\n"
    )


def test_labels_from_the_rust_tokenizer_match_the_batch_encoding_path(tiny_tokenizer, monkeypatch):
    """Preparation labels tokens from the Rust tokenizer's offsets directly; the same as through ``tokenizer(...)``."""
    from tuneforge.data import template

    examples = [CHAT, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a b  c\n\nd"}]},
                {"messages": [{"role": "user", "content": "ünïcode 😀 text"}, {"role": "assistant", "content": "😀 ok"},
                              {"role": "user", "content": "again"}, {"role": "assistant", "content": "fine"}]}]
    fast = [template._label_tokens(tiny_tokenizer, *render_conversation(ex["messages"], tiny_tokenizer), False) for ex in examples]
    backend = tiny_tokenizer._tokenizer
    backend.enable_truncation(max_length=10_000)  # a backend with state of its own: the BatchEncoding path instead
    try:
        slow = [template._label_tokens(tiny_tokenizer, *render_conversation(ex["messages"], tiny_tokenizer), False)
                for ex in examples]
    finally:
        backend.no_truncation()
    segments = [template._label_by_segments(tiny_tokenizer, *render_conversation(ex["messages"], tiny_tokenizer), False)
                for ex in examples]
    assert fast == slow == segments
    assert all(any(label != IGNORE_INDEX for label in labels) for _, labels in fast)
    assert template._label_tokens(tiny_tokenizer, "no answer here", [], False)[1] == [IGNORE_INDEX] * len(
        tiny_tokenizer("no answer here", add_special_tokens=False)["input_ids"])


CONVERSATIONS = [
    CHAT["messages"],
    [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": "{{ not jinja }} {% raw %} ünïcode 😀\n\n  spaced  "}, {"role": "assistant", "content": "a\r\nb"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "only a question"}],
]


@pytest.mark.parametrize("which", ["tiny", "smollm2", "bos_template", "dated"])
def test_direct_render_is_exactly_apply_chat_template(which, tiny_tokenizer, smollm2_dir):
    """Preparation renders plain string messages through the compiled template directly; same text, every prefix."""
    from tuneforge.data import template

    if which == "tiny":
        tok = tiny_tokenizer
    elif which == "smollm2":
        tok = load_tokenizer(smollm2_dir)
    elif which == "bos_template":
        tok, _ = _custom_template_tokenizer()
    else:  # templates may call strftime_now and read the special tokens the tokenizer passes them
        tok = build_tiny_tokenizer()
        tok.chat_template = ("{{ strftime_now('%Y') }}{{ eos_token }}{% for m in messages %}{{ m.role }}={{ m.content | trim }}"
                             "{% if loop.last and add_generation_prompt %}>{% endif %};{% endfor %}")
    assert template._direct(tok) is not None
    for messages in CONVERSATIONS:
        for n in range(1, len(messages) + 1):
            for gen in (False, True):
                expected = tok.apply_chat_template(messages[:n], add_generation_prompt=gen, tokenize=False)
                assert template._render(tok, messages[:n], add_generation_prompt=gen) == expected


def test_direct_render_leaves_other_messages_to_apply_chat_template(monkeypatch):
    """Messages with other keys or values (a name, a None, content parts) and a changed template take the library's path."""
    from tuneforge.data import template

    tok = build_tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m.role }}{{ m.name or '' }}:{{ m.content }}|{% endfor %}"
    calls = []
    original = type(tok).apply_chat_template
    monkeypatch.setattr(type(tok), "apply_chat_template", lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    assert template._render(tok, [{"role": "user", "content": "hi"}]) == "user:hi|"
    assert len(calls) == 4  # the probe, compared once while building the direct renderer
    calls.clear()
    assert template._render(tok, [{"role": "user", "content": "again"}]) == "user:again|" and calls == []
    for odd in ([{"role": "user", "content": "hi", "name": "ann"}], [{"role": "user", "content": None}],
                [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]):
        template._render(tok, odd)
    assert len(calls) == 3
    assert template._render(tok, [{"role": "user", "content": "hi", "name": "ann"}]) == "userann:hi|"
    tok.chat_template = "{% for m in messages %}[{{ m.content }}]{% endfor %}"  # a changed template is compiled again
    assert template._render(tok, [{"role": "user", "content": "hi"}]) == "[hi]"


def test_direct_render_is_off_when_it_would_differ(monkeypatch):
    """If apply_chat_template renders the probe differently (another transformers), every render goes through it."""
    from tuneforge.data import template

    tok = build_tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}{{ extra | default('') }}"
    original = type(tok).apply_chat_template
    monkeypatch.setattr(type(tok), "apply_chat_template", lambda self, *a, **k: original(self, *a, extra="!", **k))
    assert template._direct(tok) is None
    assert template._render(tok, [{"role": "user", "content": "hi"}]) == "hi!"


def test_answer_labels_match_a_token_by_token_check():
    """Bisection over offsets in text order gives what checking every token against every span gives."""
    import random

    from tuneforge.data.template import answer_labels

    def brute(ids, offsets, spans):
        return [i if e > s and any(e > a and s < b for a, b in spans) else IGNORE_INDEX for i, (s, e) in zip(ids, offsets)]

    rng = random.Random(0)
    for _ in range(500):
        offsets, pos = [], 0
        for _ in range(rng.randint(1, 40)):
            width = rng.choice([0, 1, 1, 2, 3])  # empty tokens too (added tokens, byte pieces of one character)
            start = pos if rng.random() < 0.9 else max(0, pos - 1)  # pieces of one character share offsets
            offsets.append((start, start + width))
            pos = start + width
        ids = list(range(100, 100 + len(offsets)))
        cuts = sorted(rng.sample(range(pos + 2), k=min(pos + 2, 2 * rng.randint(0, 3))))
        spans = list(zip(cuts[::2], cuts[1::2]))
        assert answer_labels(ids, offsets, spans) == brute(ids, offsets, spans)
        shuffled = rng.sample(range(len(ids)), len(ids))  # out of order: the token-by-token path
        ids2, offsets2 = [ids[k] for k in shuffled], [offsets[k] for k in shuffled]
        assert answer_labels(ids2, offsets2, spans) == brute(ids2, offsets2, spans)


def test_direct_render_with_a_template_that_refuses_system_turns_and_one_that_always_fails(monkeypatch):
    from tuneforge.data import template

    tok = build_tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system turns') }}"
                         "{% endif %}{{ m.role }}:{{ m.content }}|{% endfor %}")
    assert template._direct(tok) is not None  # the probe has no system turn
    assert template._render(tok, [{"role": "user", "content": "hi"}]) == "user:hi|"
    with pytest.raises(DataError, match="no system turns"):
        template._render(tok, [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])

    tok.chat_template = "{{ raise_exception('never') }}"
    built = []
    original = template._DirectTemplate.__init__
    monkeypatch.setattr(template._DirectTemplate, "__init__", lambda self, t: built.append(1) or original(self, t))
    for _ in range(3):  # decided once: the library's path, without building the renderer again for every row
        assert template._direct(tok) is None
    assert built == [1]
