"""LiteLLM (the `openai/` provider route) against a running Vouch node.

Run by crates/cli/tests/gateway.rs with VOUCH_BASE_URL and VOUCH_API_KEY. Exercises a
chat, a forced function call, JSON mode, and the context-window error LiteLLM's fallbacks
key on (`ContextWindowExceededError`, from our `context_length_exceeded` code). Prints one
JSON line with the receipt ids (from the `x-vouch-receipt` header) for the Rust side.
"""
import json
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download at import
import litellm  # noqa: E402

base = os.environ["VOUCH_BASE_URL"]
key = os.environ["VOUCH_API_KEY"]
common = dict(model="openai/smollm2-135m", api_base=base, api_key=key, num_retries=0, timeout=300)
out = {}


def receipt_of(r):
    h = r._hidden_params.get("additional_headers") or {}
    return h.get("x-vouch-receipt") or h.get("llm_provider-x-vouch-receipt")


r = litellm.completion(messages=[{"role": "user", "content": "Name a primary colour."}], max_tokens=12, **common)
assert r.choices[0].message.content, r
out["chat"] = receipt_of(r)

tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                         "required": ["city"], "additionalProperties": False}}}]
r = litellm.completion(messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=tools, max_tokens=40,
                       tool_choice={"type": "function", "function": {"name": "get_weather"}}, **common)
call = r.choices[0].message.tool_calls[0]
assert call.function.name == "get_weather" and json.loads(call.function.arguments)["city"], r
assert r.choices[0].finish_reason == "tool_calls", r
out["tool"] = receipt_of(r)

r = litellm.completion(messages=[{"role": "user", "content": "A JSON object about a dog."}], max_tokens=40,
                       response_format={"type": "json_object"}, **common)
if r.choices[0].finish_reason == "stop":
    assert isinstance(json.loads(r.choices[0].message.content), dict), r
out["json"] = receipt_of(r)

try:
    litellm.completion(messages=[{"role": "user", "content": "word " * 9000}], max_tokens=10, **common)
    out["context_error"] = None
except litellm.ContextWindowExceededError as e:
    out["context_error"] = type(e).__name__
print(json.dumps(out))
