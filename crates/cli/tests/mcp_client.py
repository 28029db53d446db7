"""An AI agent's view: the official Python `mcp` client (2.x) against `vouch up`'s /mcp.

Env: VOUCH_URL (node base URL), VOUCH_API_KEY (funded key), VOUCH_TINY_KEY (key whose spend
limit is below one request). Prints one JSON line with what the Rust side checks.
"""
import json
import os
import urllib.error
import urllib.request

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError

BASE = os.environ["VOUCH_URL"]
URL = BASE + "/mcp"


async def with_session(key, fn):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(URL, http_client=http) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return await fn(s)


def content(r):
    return r.structured_content


async def main():
    out = {}

    async def agent(s):
        tools = await s.list_tools()
        out["tools"] = sorted(t.name for t in tools.tools)
        out["providers"] = content(await s.call_tool("list_providers", {}))
        out["model"] = content(await s.call_tool("get_model", {"name": "smollm2-135m"}))
        out["missing_model_error"] = (await s.call_tool("get_model", {"name": "nope"})).is_error
        before = content(await s.call_tool("wallet_balance", {}))
        r = await s.call_tool("infer", {"prompt": "Name a fruit.", "max_tokens": 8})
        assert not r.is_error, r
        out["infer"] = content(r)
        e = await s.call_tool("embed", {"text": "A fruit is sweet."})
        assert not e.is_error, e
        out["embed_dim"] = len(content(e)["embedding"])
        after = content(await s.call_tool("wallet_balance", {}))
        out["balance_before"], out["balance_after"] = before["balance"], after["balance"]
        out["spent_after"] = after["spent"]
        receipt = json.load(urllib.request.urlopen(f"{BASE}/v1/receipts/{out['infer']['receipt']}"))
        out["verify"] = content(await s.call_tool("verify_receipt", {"receipt": receipt}))
        # A receipt invented and signed by a random key, never committed (issue 18 row 4).
        with open(os.environ["VOUCH_INVENTED_RECEIPT"]) as f:
            out["verify_invented"] = content(await s.call_tool("verify_receipt", {"receipt": json.load(f)}))
        receipt["output"] = receipt["output"] + "!"
        out["verify_tampered"] = content(await s.call_tool("verify_receipt", {"receipt": receipt}))
        try:
            await s.call_tool("verify_receipt", {"receipt": receipt, "path": "/etc/passwd"})
            out["extra_args"] = "accepted"
        except MCPError as err:
            out["extra_args"] = err.error.code
        try:
            await s.call_tool("wallet_balance", {"path": "/etc/passwd"})
            out["extra_args_no_arg_tool"] = "accepted"
        except MCPError as err:
            out["extra_args_no_arg_tool"] = err.error.code

    await with_session(os.environ["VOUCH_API_KEY"], agent)

    async def bad(s):
        try:
            await s.call_tool("wallet_balance", {})
            return "accepted"
        except MCPError as err:
            return err.error.code

    def mcp_code(err):
        # The error may come wrapped in an exception group by the client's task group.
        if isinstance(err, MCPError):
            return err.error.code
        for e in getattr(err, "exceptions", ()):
            c = mcp_code(e)
            if c is not None:
                return c
        return None

    async def refused(key):
        # Every HTTP request needs the key, initialize included: the session never opens.
        try:
            return await with_session(key, bad)
        except Exception as err:  # noqa: BLE001 - reported to the Rust side
            return mcp_code(err) or repr(err)

    out["bad_key"] = await refused("vk-not-a-key")
    out["no_key"] = await refused(None)

    # The HTTP answer itself (MCP authorization spec): 401 with a Bearer challenge.
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}}
    for name, key in (("http_bad_key", "vk-not-a-key"), ("http_no_key", None)):
        headers = {"content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        req = urllib.request.Request(URL, data=json.dumps(init).encode(), headers=headers)
        try:
            urllib.request.urlopen(req)
            out[name] = {"status": 200}
        except urllib.error.HTTPError as err:
            out[name] = {"status": err.code,
                         "www_authenticate": err.headers.get("www-authenticate", "")}

    async def tiny(s):
        r = await s.call_tool("infer", {"prompt": "hi", "max_tokens": 4})
        return {"is_error": r.is_error, "text": r.content[0].text if r.content else ""}

    out["tiny"] = await with_session(os.environ["VOUCH_TINY_KEY"], tiny)
    print(json.dumps(out))


anyio.run(main)
