"""End to end: the real SmolLM2-135M-Instruct served over HTTP and asked one question with the openai client."""

from __future__ import annotations

import openai
import pytest

from tuneforge.serve import background_server, create_app, load_engine


@pytest.mark.e2e
def test_smollm2_answers_a_chat_question(smollm2_dir, tmp_path):
    from tuneforge.security import create_key

    key = create_key(tmp_path / "keys.json", "e2e")
    engine = load_engine("smollm2-135m-instruct")
    with background_server(create_app(engine, keys=tmp_path / "keys.json")) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=16, temperature=0,
        )
    choice = reply.choices[0]
    assert choice.message.content.strip() and choice.finish_reason in ("stop", "length")
    assert "<|im_end|>" not in choice.message.content and "<|im_start|>" not in choice.message.content
    assert 0 < reply.usage.completion_tokens <= 16
    print(repr(choice.message.content))
