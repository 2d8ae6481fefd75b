"""data/prompts.py: the prompt every generator renders and the tokens that end an answer."""

from tuneforge.data.prompts import add_special_tokens, encode_prompt, render_prompt, stop_token_ids

MESSAGES = [{"role": "user", "content": "where is my parcel"}]


def test_chat_template_prompt_opens_the_assistant_turn_without_a_second_bos(tiny_tokenizer):
    ids = encode_prompt(MESSAGES, tiny_tokenizer)
    text = tiny_tokenizer.decode(ids)
    assert text.endswith("<|im_start|>assistant\n") and "where is my parcel" in text
    assert ids == tiny_tokenizer(render_prompt(MESSAGES, tiny_tokenizer), add_special_tokens=False)["input_ids"]
    assert ids.count(tiny_tokenizer.bos_token_id) == text.count("<|im_start|>")  # the template's only


def test_fallback_prompt_for_a_tokenizer_without_a_template(tiny_model_dir):
    from tuneforge.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = None
    assert add_special_tokens(tok)
    text = render_prompt(MESSAGES, tok)
    assert text == "### User:\nwhere is my parcel\n\n### Assistant:\n"
    assert stop_token_ids(tok) == [tok.eos_token_id]


def test_stop_ids_hold_the_end_of_turn_token_even_when_eos_differs(tiny_model_dir):
    from tuneforge.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    tok.eos_token = "<|endoftext|>"
    ids = stop_token_ids(tok)
    assert ids[0] == tok.convert_tokens_to_ids("<|im_end|>") and tok.eos_token_id in ids
