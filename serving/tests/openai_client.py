#!/usr/bin/env python3
"""Calls the gateway's OpenAI-compatible routes with the official `openai` client.

Usage: openai_client.py BASE_URL [CA_FILE]   (e.g. http://127.0.0.1:PORT/v1, endpoint
"chat" backed by the echoing stand-in of tests/openai.rs, or https://…/v1 with the
cluster's CA and examples/openai-server.py as the endpoint's server, from
gpuctl/tests/serving_openai.rs). Run by those tests when `import openai` works.
"""

import sys

import openai

http_client = openai.DefaultHttpxClient(verify=sys.argv[2]) if len(sys.argv) > 2 else None
client = openai.OpenAI(
    base_url=sys.argv[1], api_key="unused", max_retries=0, timeout=60, http_client=http_client
)

assert [m.id for m in client.models.list()] == ["chat"]

r = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
assert r.choices[0].message.content == "echo: hi", r
assert r.usage.completion_tokens == 2, r.usage

stream = client.chat.completions.create(
    model="chat",
    messages=[{"role": "user", "content": "there"}],
    stream=True,
    stream_options={"include_usage": True},
)
parts, usage = [], None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
    if chunk.usage:
        usage = chunk.usage
assert "".join(parts) == "echo: there", parts
assert usage is not None and usage.total_tokens == 5, usage

c = client.completions.create(model="chat", prompt="abc")
assert c.choices[0].text == "echo: abc", c

e = client.embeddings.create(model="chat", input="abc")
assert e.data[0].embedding == [0.5, 0.25, 0.125], e

try:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    raise SystemExit("expected an error for an unknown model")
except openai.NotFoundError as err:
    assert "does not exist" in str(err), str(err)
print("openai: ok")
