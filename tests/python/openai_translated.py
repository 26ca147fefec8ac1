"""The official `openai` Python SDK against models whose targets speak another format.

Env: LLMGW_BASE_URL (…/v1), LLMGW_KEY, LLMGW_MODELS (comma-separated aliases, each routed to
one non-OpenAI provider kind on the mock). For each: chat, stream (with usage), a tool call round
trip (plain and streamed) and provider errors raised as the SDK's own exception types.
"""

import json
import os

import openai
from openai import OpenAI

HELLO = "Hello from the mock provider."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]

client = OpenAI(base_url=os.environ["LLMGW_BASE_URL"], api_key=os.environ["LLMGW_KEY"], max_retries=0, timeout=30)


def check(model: str) -> None:
    # Chat.
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello"}],
        max_tokens=50,
        temperature=0.2,
    )
    chat = raw.parse()
    assert chat.choices[0].message.content == HELLO, (model, chat)
    assert chat.choices[0].finish_reason == "stop", (model, chat)
    # Translated answers name the alias; Azure's (OpenAI's own format) name the deployment.
    assert chat.model in (model, "my-deployment"), (model, chat.model)
    assert chat.usage.completion_tokens == 5 and chat.usage.prompt_tokens > 0, (model, chat.usage)
    assert raw.headers["x-llmgw-attempts"] == "1", raw.headers

    # Stream with usage.
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "stream please"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == HELLO, (model, text)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"], (model, finishes)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5, (model, chunks[-1])

    # Stream without usage: no usage chunk.
    chunks = list(
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert all(c.usage is None for c in chunks), (model, chunks[-1])

    # Tool call round trip.
    ask = [{"role": "user", "content": "weather in Paris? #mock:tool=get_weather"}]
    first = client.chat.completions.create(model=model, messages=ask, tools=TOOLS, tool_choice="auto")
    msg = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls", (model, first)
    call = msg.tool_calls[0]
    assert call.function.name == "get_weather", (model, call)
    assert json.loads(call.function.arguments) == {"city": "Paris"}, (model, call)
    history = ask + [msg.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    second = client.chat.completions.create(model=model, messages=history, tools=TOOLS)
    assert "The tool said: sunny" in second.choices[0].message.content, (model, second)

    # Streamed tool call.
    chunks = list(client.chat.completions.create(model=model, messages=ask, tools=TOOLS, stream=True))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather", (model, calls)
    args = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(args) == {"city": "Paris"}, (model, args)

    # Provider errors, as the SDK's exception types.
    for directive, exc in [("status=429", openai.RateLimitError), ("status=400", openai.BadRequestError)]:
        try:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"x #mock:{directive}"}])
        except exc as e:
            assert e.body is not None and e.message, (model, e)
        else:
            raise AssertionError(f"{model}: {directive} did not raise {exc.__name__}")
    print(f"{model}: ok")


for m in os.environ["LLMGW_MODELS"].split(","):
    check(m)
print("all checks passed")
