"""The official `openai` Python SDK's Responses API against a running llmgw edge.

Env: LLMGW_BASE_URL (…/v1), LLMGW_KEY, LLMGW_MODEL (an alias served by an OpenAI-kind provider
on the mock), LLMGW_UNSUPPORTED_MODEL (an alias whose provider kind has no Responses API).
Exits non-zero on the first failed check.
"""

import os
import sys

import openai
from openai import OpenAI

TEXT = "Hello from the mock provider."

base = os.environ["LLMGW_BASE_URL"]
key = os.environ["LLMGW_KEY"]
model = os.environ["LLMGW_MODEL"]
unsupported = os.environ["LLMGW_UNSUPPORTED_MODEL"]

client = OpenAI(base_url=base, api_key=key, max_retries=0, timeout=30)


def expect(exc, fn):
    try:
        fn()
    except exc as e:
        return e
    sys.exit(f"expected {exc.__name__}")


# Not streamed, a string input: 2 words of instructions and 3 of input are the prompt.
raw = client.responses.with_raw_response.create(model=model, instructions="be brief", input="one two three")
assert raw.headers["x-llmgw-provider"], raw.headers
resp = raw.parse()
assert resp.object == "response" and resp.status == "completed", resp
assert resp.id.startswith("resp_"), resp.id
assert resp.output_text == TEXT, resp.output_text
assert resp.output[0].type == "message" and resp.output[0].role == "assistant", resp.output
assert resp.instructions == "be brief", resp.instructions
usage = resp.usage
assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (5, 5, 10), usage
assert usage.input_tokens_details.cached_tokens == 0, usage
assert usage.output_tokens_details.reasoning_tokens == 0, usage

# A list of input items, with prompt-cache hits reported.
resp = client.responses.create(
    model=model,
    input=[
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "input_text", "text": "hi #mock:usage=100,10,cached=40"}]},
    ],
)
assert resp.output_text == TEXT, resp
assert (resp.usage.input_tokens, resp.usage.output_tokens) == (100, 10), resp.usage
assert resp.usage.input_tokens_details.cached_tokens == 40, resp.usage

# stream=True: the typed events, in order, numbered.
events = list(client.responses.create(model=model, input="stream please", stream=True))
types = [e.type for e in events]
assert types[:4] == [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
], types
assert types[-4:] == [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
], types
assert [e.sequence_number for e in events] == list(range(len(events))), events
assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == TEXT, events
done = events[-1].response
assert done.status == "completed" and done.output_text == TEXT, done
assert (done.usage.input_tokens, done.usage.output_tokens) == (2, 5), done.usage

# The streaming helper, which rebuilds the response from the events.
with client.responses.stream(model=model, input="stream helper please") as stream:
    deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    final = stream.get_final_response()
assert "".join(deltas) == TEXT, deltas
assert final.output_text == TEXT, final
assert (final.usage.input_tokens, final.usage.output_tokens) == (3, 5), final.usage

# A provider kind without the Responses API: a 400 the SDK can tell apart.
e = expect(openai.BadRequestError, lambda: client.responses.create(model=unsupported, input="hi"))
assert e.status_code == 400 and e.code == "not_supported", e

# A stream the provider cuts mid-way: an error, not a silent end (nor a bare connection error).
e = expect(
    openai.APIError,
    lambda: list(client.responses.create(model=model, input="go #mock:drop_after=6", stream=True)),
)
assert not isinstance(e, openai.APIConnectionError), repr(e)
assert "mid-stream" in e.message, e.message

print("openai responses sdk: all checks passed")
