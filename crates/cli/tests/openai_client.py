"""The official OpenAI Python client against a running Vouch node.

Run by crates/cli/tests/gateway.rs with VOUCH_BASE_URL, VOUCH_API_KEY and VOUCH_BROKE_KEY
(a key whose wallet has no funds). Prints one JSON line with what the Rust side checks.
"""
import json
import os
import sys

import openai
from openai import OpenAI

base = os.environ["VOUCH_BASE_URL"]
client = OpenAI(base_url=base, api_key=os.environ["VOUCH_API_KEY"], max_retries=0, timeout=300)
out = {}

models = client.models.list()
out["models"] = [m.id for m in models.data]
assert "smollm2-135m" in out["models"], out["models"]

r = client.chat.completions.create(
    model="smollm2-135m",
    messages=[{"role": "user", "content": "Name a primary colour."}],
    max_tokens=12,
    seed=1,
)
assert r.choices[0].message.role == "assistant"
assert r.choices[0].message.content, r
assert r.usage.completion_tokens >= 1 and r.usage.prompt_tokens > 10, r.usage
assert r.choices[0].finish_reason in ("stop", "length")
raw = r.model_dump()
out["chat"] = {"content": r.choices[0].message.content, "receipt": raw["receipt"], "usage": raw["usage"]}

# The same request with the raw response, to read the receipt header.
resp = client.chat.completions.with_raw_response.create(
    model="smollm2-135m",
    messages=[{"role": "user", "content": "Name a primary colour."}],
    max_tokens=12,
    seed=1,
)
out["header_receipt"] = resp.headers.get("x-vouch-receipt")
same = resp.parse()
assert same.choices[0].message.content == r.choices[0].message.content, "greedy + same seed must repeat"

stream = client.chat.completions.create(
    model="smollm2-135m",
    messages=[{"role": "user", "content": "Count from one to five."}],
    max_tokens=16,
    stream=True,
    stream_options={"include_usage": True},
)
text, usage, finish, receipt = "", None, None, None
for chunk in stream:
    d = chunk.model_dump()
    if chunk.usage is not None:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta and c.delta.content:
            text += c.delta.content
        if c.finish_reason:
            finish = c.finish_reason
            receipt = (d.get("vouch") or {}).get("receipt")
assert text and usage and finish and receipt, (text, usage, finish, receipt)
out["stream"] = {"text": text, "completion_tokens": usage.completion_tokens, "receipt": receipt}

c = client.completions.create(model="smollm2-135m", prompt="The capital of France is", max_tokens=6, seed=2)
assert c.choices[0].text, c
out["completion"] = {"text": c.choices[0].text, "receipt": c.model_dump()["receipt"]}

e = client.embeddings.create(model="minilm-l6", input=["A cat sat on the mat.", "A kitten rested on the rug."])
assert len(e.data) == 2 and len(e.data[0].embedding) == 384, e
ef = client.embeddings.create(model="minilm-l6", input="A cat sat on the mat.", encoding_format="float")
diff = max(abs(a - b) for a, b in zip(e.data[0].embedding, ef.data[0].embedding))
assert diff < 1e-6, diff  # base64 (the client's default) and float carry the same vector
dot = sum(a * b for a, b in zip(e.data[0].embedding, e.data[1].embedding))
out["embeddings"] = {"receipts": e.model_dump()["receipts"], "cosine": dot, "usage": e.usage.prompt_tokens}

# Structured output (issue 20): JSON mode and a JSON schema, enforced by the token mask
# and signed into the receipt.
j = client.chat.completions.create(
    model="smollm2-135m",
    messages=[{"role": "user", "content": "Give me a JSON object about a cat."}],
    max_tokens=48,
    response_format={"type": "json_object"},
    seed=3,
)
jraw = j.model_dump()
if j.choices[0].finish_reason == "stop":
    assert isinstance(json.loads(j.choices[0].message.content), dict), j
schema = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}, "legs": {"type": "integer"}},
    "required": ["name", "legs"],
    "additionalProperties": False,
}
sc = client.chat.completions.create(
    model="smollm2-135m",
    messages=[{"role": "user", "content": "Describe a spider."}],
    max_tokens=40,
    response_format={"type": "json_schema", "json_schema": {"name": "animal", "schema": schema, "strict": True}},
    seed=4,
)
assert sc.choices[0].finish_reason == "stop", sc
animal = json.loads(sc.choices[0].message.content)
assert set(animal) == {"name", "legs"} and isinstance(animal["legs"], int), animal
out["json"] = {"receipt": jraw["receipt"], "schema_receipt": sc.model_dump()["receipt"], "animal": animal}

# Function calling: a forced call, its arguments matching the tool's schema; the result
# sent back in the follow-up turn.
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                       "required": ["city"], "additionalProperties": False},
    },
}]
ask = [{"role": "user", "content": "What is the weather in Paris?"}]
t = client.chat.completions.create(
    model="smollm2-135m", messages=ask, tools=tools, max_tokens=40, seed=5,
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
)
assert t.choices[0].finish_reason == "tool_calls", t
call = t.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather" and call.type == "function", call
args = json.loads(call.function.arguments)
assert isinstance(args["city"], str), args
follow = client.chat.completions.create(
    model="smollm2-135m",
    messages=ask + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temp_c": 18, "sky": "clear"})},
    ],
    tools=tools, tool_choice="none", max_tokens=24, seed=6,
)
assert follow.choices[0].message.content, follow
# Streamed: the call arrives as a tool_calls delta, then finish_reason tool_calls.
st = client.chat.completions.create(
    model="smollm2-135m", messages=ask, tools=tools, tool_choice="required", max_tokens=40, seed=7,
    stream=True,
)
scalls, sfinish, sreceipt = [], None, None
for chunk in st:
    d = chunk.model_dump()
    for c in chunk.choices:
        if c.delta and c.delta.tool_calls:
            scalls += c.delta.tool_calls
        if c.finish_reason:
            sfinish = c.finish_reason
            sreceipt = (d.get("vouch") or {}).get("receipt")
assert sfinish == "tool_calls" and scalls and scalls[0].function.name == "get_weather", (sfinish, scalls)
out["tools"] = {
    "receipt": t.model_dump()["receipt"], "call_id": call.id, "args": args,
    "followup_receipt": follow.model_dump()["receipt"], "stream_receipt": sreceipt,
}

# The Responses API (issue 20): text, streamed events, a forced function call.
rs = client.responses.create(model="smollm2-135m", input="Name a primary colour.", max_output_tokens=12, extra_body={"seed": 8})
assert rs.object == "response" and rs.output_text, rs
rsraw = rs.model_dump()
events, rtext, rdone = [], "", None
with client.responses.stream(model="smollm2-135m", input="Count from one to five.", max_output_tokens=16) as st2:
    for ev in st2:
        events.append(ev.type)
        if ev.type == "response.output_text.delta":
            rtext += ev.delta
    rdone = st2.get_final_response()
assert events[0] == "response.created" and events[-1] == "response.completed", events
assert rtext and rtext == rdone.output_text, (rtext, rdone.output_text)
rf = client.responses.create(
    model="smollm2-135m", input="What is the weather in Paris?", max_output_tokens=40,
    tools=[{"type": "function", "name": "get_weather", "parameters": tools[0]["function"]["parameters"]}],
    tool_choice="required",
)
fc = [o for o in rf.output if o.type == "function_call"]
assert fc and fc[0].name == "get_weather" and json.loads(fc[0].arguments)["city"], rf
out["responses"] = {"receipt": rsraw["receipt"], "stream_receipt": rdone.model_dump()["receipt"],
                    "tool_receipt": rf.model_dump()["receipt"], "events": sorted(set(events))}

# Logprobs (issue 20): recomputed by the gateway from the receipt, as any verifier would.
lp = client.chat.completions.create(
    model="smollm2-135m", messages=[{"role": "user", "content": "Name a primary colour."}],
    max_tokens=8, seed=9, logprobs=True, top_logprobs=3,
)
content = lp.choices[0].logprobs.content
assert content and all(len(c.top_logprobs) == 3 for c in content), lp
# Greedy: every chosen token is the likeliest one.
assert all(abs(c.logprob - c.top_logprobs[0].logprob) < 1e-9 for c in content), content
out["logprobs"] = {"receipt": lp.model_dump()["receipt"],
                   "values": [[c.token, c.logprob] for c in content]}

def status_of(fn):
    try:
        fn()
    except openai.APIStatusError as e:
        return e.status_code, e.body.get("message") if isinstance(e.body, dict) else str(e.body)
    return None

errors = {}
errors["unknown_model"] = status_of(lambda: client.chat.completions.create(
    model="gpt-9", messages=[{"role": "user", "content": "hi"}]))
errors["negative_max_tokens"] = status_of(lambda: client.chat.completions.create(
    model="smollm2-135m", messages=[{"role": "user", "content": "hi"}], max_tokens=-5))
errors["huge_prompt"] = status_of(lambda: client.chat.completions.create(
    model="smollm2-135m", messages=[{"role": "user", "content": "x" * (1 << 20)}], max_tokens=4))
bad = OpenAI(base_url=base, api_key="vk-wrong", max_retries=0)
errors["wrong_key"] = status_of(lambda: bad.models.list() and bad.chat.completions.create(
    model="smollm2-135m", messages=[{"role": "user", "content": "hi"}]))
broke = OpenAI(base_url=base, api_key=os.environ["VOUCH_BROKE_KEY"], max_retries=0)
errors["no_funds"] = status_of(lambda: broke.chat.completions.create(
    model="smollm2-135m", messages=[{"role": "user", "content": "hi"}], max_tokens=4))
out["errors"] = errors
print(json.dumps(out))
