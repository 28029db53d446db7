"""LangChain's official OpenAI integration (langchain-openai) against a running Vouch node.

Run by crates/cli/tests/gateway.rs with VOUCH_BASE_URL and VOUCH_API_KEY. Exercises
`bind_tools` (a forced call), `with_structured_output` (JSON schema, strict) and
`OpenAIEmbeddings` (text inputs: its default token-array inputs need tiktoken's files,
which this machine cannot download). Prints one JSON line with the receipt ids (from the
`x-vouch-receipt` header) for the Rust side to re-execute.
"""
import json
import os
from typing import Literal

from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

base = os.environ["VOUCH_BASE_URL"]
key = os.environ["VOUCH_API_KEY"]
llm = ChatOpenAI(base_url=base, api_key=key, model="smollm2-135m", max_tokens=40, temperature=0,
                 max_retries=0, timeout=300, include_response_headers=True)
out = {}


def receipt_of(msg):
    return msg.response_metadata["headers"]["x-vouch-receipt"]


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return "sunny"


m = llm.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Rome?")
assert m.tool_calls and m.tool_calls[0]["name"] == "get_weather", m
assert isinstance(m.tool_calls[0]["args"]["city"], str), m.tool_calls
out["tool"] = receipt_of(m)


class Pick(BaseModel):
    colour: Literal["red", "green", "blue"]
    sure: bool


res = llm.with_structured_output(Pick, method="json_schema", strict=True, include_raw=True).invoke("Pick a colour.")
assert isinstance(res["parsed"], Pick), res
out["structured"] = receipt_of(res["raw"])
out["pick"] = res["parsed"].model_dump()

emb = OpenAIEmbeddings(base_url=base, api_key=key, model="minilm-l6", check_embedding_ctx_length=False,
                       max_retries=0)
v = emb.embed_documents(["A cat sat on the mat.", "A kitten rested on the rug."])
assert len(v) == 2 and len(v[0]) == 384
out["embeddings"] = len(v)
print(json.dumps(out))
