"""The official `anthropic` Python SDK against the gateway's `/v1/messages`.

Env: LLMGW_BASE_URL (the edge's root, without /v1), LLMGW_KEY, LLMGW_MODELS (comma-separated
aliases; each routed to a different provider kind on the mock), LLMGW_COUNT_MODEL (an alias
routed to an Anthropic-kind target, for count_tokens).
"""

import os

import anthropic
from anthropic import Anthropic

HELLO = "Hello from the mock provider."
TOOLS = [
    {
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]

base = os.environ["LLMGW_BASE_URL"]
key = os.environ["LLMGW_KEY"]
client = Anthropic(base_url=base, api_key=key, max_retries=0, timeout=30)
bearer = Anthropic(base_url=base, auth_token=key, max_retries=0, timeout=30)


def check(model: str) -> None:
    for c in (client, bearer):
        msg = c.messages.create(
            model=model,
            max_tokens=100,
            system="be brief",
            messages=[{"role": "user", "content": "say hello"}],
        )
        assert msg.type == "message" and msg.role == "assistant", (model, msg)
        assert msg.content[0].type == "text" and msg.content[0].text == HELLO, (model, msg)
        assert msg.stop_reason == "end_turn", (model, msg)
        assert msg.usage.output_tokens == 5 and msg.usage.input_tokens > 0, (model, msg.usage)

    with client.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == HELLO, (model, text)
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5, (model, final)

    # Tool use round trip.
    ask = [{"role": "user", "content": "weather in Paris? #mock:tool=get_weather"}]
    first = client.messages.create(model=model, max_tokens=100, tools=TOOLS, messages=ask)
    assert first.stop_reason == "tool_use", (model, first)
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}, (model, use)
    history = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
    ]
    second = client.messages.create(model=model, max_tokens=100, tools=TOOLS, messages=history)
    answer = "".join(b.text for b in second.content if b.type == "text")
    assert "The tool said: sunny" in answer, (model, second)

    # Streamed tool use.
    with client.messages.stream(model=model, max_tokens=100, tools=TOOLS, messages=ask) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}, (model, final)
    assert final.stop_reason == "tool_use", (model, final)

    # Provider errors, as the SDK's exception types.
    for directive, exc in [("status=429", anthropic.RateLimitError), ("status=400", anthropic.BadRequestError)]:
        try:
            client.messages.create(
                model=model, max_tokens=10, messages=[{"role": "user", "content": f"x #mock:{directive}"}]
            )
        except exc as e:
            assert isinstance(e.body, dict) and e.body.get("type") == "error", (model, e.body)
        else:
            raise AssertionError(f"{model}: {directive} did not raise {exc.__name__}")
    print(f"{model}: ok")


for m in os.environ["LLMGW_MODELS"].split(","):
    check(m)

# The gateway's own errors, in Anthropic's shape.
try:
    Anthropic(base_url=base, api_key="sk-llmgw-wrong", max_retries=0).messages.create(
        model="x", max_tokens=1, messages=[{"role": "user", "content": "hi"}]
    )
except anthropic.AuthenticationError as e:
    assert e.body["error"]["type"] == "authentication_error", e.body
else:
    raise AssertionError("a wrong key did not raise AuthenticationError")
try:
    client.messages.create(model="no-such-model", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
else:
    raise AssertionError("an unknown model did not raise NotFoundError")
try:
    client.messages.create(model=os.environ["LLMGW_MODELS"].split(",")[0], max_tokens=1, messages="not a list")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body
else:
    raise AssertionError("a malformed request did not raise BadRequestError")

count = client.messages.count_tokens(
    model=os.environ["LLMGW_COUNT_MODEL"], messages=[{"role": "user", "content": "count these four words"}]
)
assert count.input_tokens > 0, count
print("all checks passed")
