"""The official openai SDK through a model whose first target fails: it sees the second's answer."""

import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["LLMGW_BASE_URL"], api_key=os.environ["LLMGW_KEY"], max_retries=0)
raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
assert raw.headers["x-llmgw-attempts"] == "2", raw.headers
assert raw.headers["x-llmgw-provider"] == "b", raw.headers
assert raw.parse().choices[0].message.content == "Hello from the mock provider."
chunks = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True))
assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello from the mock provider."
print("fallback: ok")
