"""Client conformance: the official `openai` Python SDK against a running llmgw edge.

Env: LLMGW_BASE_URL (…/v1), LLMGW_KEY (allowed every model), LLMGW_LIMITED_KEY (only `chat`).
Exits non-zero on the first failed check.
"""

import os
import sys

import openai
from openai import OpenAI

base = os.environ["LLMGW_BASE_URL"]
key = os.environ["LLMGW_KEY"]
limited = os.environ["LLMGW_LIMITED_KEY"]

client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)

# Non-streaming chat.
raw = client.chat.completions.with_raw_response.create(
    model="chat", messages=[{"role": "user", "content": "say hello"}]
)
assert raw.headers["x-llmgw-provider"] == "mock", raw.headers
chat = raw.parse()
assert chat.choices[0].message.content == "Hello from the mock provider.", chat
assert chat.usage.prompt_tokens == 2 and chat.usage.completion_tokens == 5, chat.usage

# Streaming chat, without and with the usage chunk.
stream = client.chat.completions.create(
    model="chat", messages=[{"role": "user", "content": "stream please"}], stream=True
)
chunks = list(stream)
text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert text == "Hello from the mock provider.", text
assert all(c.usage is None for c in chunks), "usage chunk sent without stream_options"

stream = client.chat.completions.create(
    model="chat",
    messages=[{"role": "user", "content": "stream please"}],
    stream=True,
    stream_options={"include_usage": True},
)
chunks = list(stream)
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5, chunks[-1]

# Legacy completions and embeddings.
comp = client.completions.create(model="chat", prompt="once upon a time")
assert comp.choices[0].text, comp
emb = client.embeddings.create(model="embed", input=["first text", "second"])
assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0, emb

# Models: only what the key may use.
assert [m.id for m in client.models.list()] == ["chat", "embed", "other"]
limited_client = OpenAI(base_url=base, api_key=limited, max_retries=0)
assert [m.id for m in limited_client.models.list()] == ["chat"]


def expect(exc, fn):
    try:
        fn()
    except exc as e:
        return e
    sys.exit(f"expected {exc.__name__}")


e = expect(
    openai.AuthenticationError,
    lambda: OpenAI(base_url=base, api_key="sk-llmgw-wrong", max_retries=0).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}]
    ),
)
assert e.status_code == 401 and e.code == "invalid_api_key", e
e = expect(
    openai.NotFoundError,
    lambda: client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}]),
)
assert e.code == "model_not_found", e
e = expect(
    openai.PermissionDeniedError,
    lambda: limited_client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}]),
)
assert e.code == "model_not_allowed", e
e = expect(
    openai.RateLimitError,
    lambda: client.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "#mock:status=429"}]
    ),
)
e = expect(
    openai.APIError,
    lambda: list(
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "#mock:drop_after=3"}], stream=True
        )
    ),
)
print("openai sdk: all checks passed")
