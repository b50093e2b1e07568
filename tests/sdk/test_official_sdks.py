"""The official OpenAI and Anthropic Python SDKs, pointed at the sidecar: only base URL and key change.

Run by the end-to-end tests (tests/e2e/gateway.rs), which start the sidecar in front of fake providers and
pass SIDECAR_URL and USER_TOKEN (a Directus access token, used as the SDK's API key).
"""
import os

import anthropic
import openai

SIDECAR = os.environ["SIDECAR_URL"]
TOKEN = os.environ["USER_TOKEN"]
MESSAGES = [{"role": "user", "content": "Say hi"}]


def openai_client():
    return openai.OpenAI(base_url=f"{SIDECAR}/v1", api_key=TOKEN, max_retries=0)


def anthropic_client():
    return anthropic.Anthropic(base_url=SIDECAR, api_key=TOKEN, max_retries=0)


def test_openai_chat_completion():
    raw = openai_client().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    assert raw.headers["x-byok-source"] in ("byok", "internal")
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hi!"
    assert completion.usage.total_tokens == 14


def test_openai_streaming():
    stream = openai_client().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello"
    # The sidecar asks for usage to charge the stream, but this client did not: it gets no usage chunk.
    assert all(c.choices and c.usage is None for c in chunks)


def test_openai_streaming_with_usage():
    stream = openai_client().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    assert chunks[-1].usage.completion_tokens == 2


def test_anthropic_message():
    message = anthropic_client().messages.create(model="claude-3-5-haiku-latest", max_tokens=64, messages=MESSAGES)
    assert message.content[0].text == "Hi!"
    assert message.usage.output_tokens == 3


def test_anthropic_streaming():
    with anthropic_client().messages.stream(model="claude-3-5-haiku-latest", max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello"
    assert final.usage.output_tokens == 6


def test_openai_responses():
    raw = openai_client().responses.with_raw_response.create(model="gpt-4o-mini", input="Say hi")
    assert raw.headers["x-byok-provider"] == "openai"
    assert float(raw.headers["x-byok-cost-cents"]) > 0
    response = raw.parse()
    assert response.output_text == "Hi!"
    assert response.usage.total_tokens == 12


def test_openai_responses_streaming():
    events = list(openai_client().responses.create(model="gpt-4o-mini", input="Say hi", stream=True))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Hello"
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage.output_tokens == 4
    # The sidecar adds what the call cost to the final usage; the SDK keeps unknown fields.
    assert completed.response.usage.model_extra["cost_cents"] > 0


def test_openai_embeddings():
    result = openai_client().embeddings.create(model="text-embedding-3-small", input="hello")
    assert result.data[0].embedding == [0.25, -0.5, 0.125]
    assert result.usage.prompt_tokens == 5


def test_openai_models_list():
    models = {m.id: m for m in openai_client().models.list()}
    assert models["gpt-4o-mini"].owned_by == "openai"
    assert models["gpt-4o-mini"].model_extra["x_byok_source"] == "byok"
    assert models["mistral-small"].owned_by == "mistral"


def test_anthropic_models_list():
    ids = [m.id for m in anthropic_client().models.list()]
    assert "claude-3-5-haiku" in ids
    assert not any(i.startswith("gpt-") for i in ids), ids


def test_anthropic_count_tokens():
    counted = anthropic_client().messages.count_tokens(model="claude-3-5-haiku-latest", messages=MESSAGES)
    assert counted.input_tokens == 12


def test_a_bad_token_is_an_authentication_error_in_both_sdks():
    bad_openai = openai.OpenAI(base_url=f"{SIDECAR}/v1", api_key="not-a-token", max_retries=0)
    try:
        bad_openai.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        raise AssertionError("expected a 401")
    except openai.AuthenticationError as error:
        assert error.status_code == 401
    bad_anthropic = anthropic.Anthropic(base_url=SIDECAR, api_key="not-a-token", max_retries=0)
    try:
        bad_anthropic.messages.create(model="claude-3-5-haiku-latest", max_tokens=8, messages=MESSAGES)
        raise AssertionError("expected a 401")
    except anthropic.AuthenticationError as error:
        assert error.status_code == 401
