// The official OpenAI Node client against a running Vouch node (issue 20): chat, streaming,
// structured output, a forced function call and its follow-up turn, the Responses API,
// embeddings. Each receipt is fetched, parsed and re-serialized as JavaScript does
// (every number a double) and posted back to /v1/verify, which must still find its
// signature good. Prints one JSON line with the receipts for the Rust side to re-execute.
// Usage: VOUCH_BASE_URL=http://.../v1 VOUCH_API_KEY=vk-... node tests/openai_client.mjs
import OpenAI from "openai";

const base = process.env.VOUCH_BASE_URL;
const client = new OpenAI({ baseURL: base, apiKey: process.env.VOUCH_API_KEY, maxRetries: 0, timeout: 300000 });
const model = "smollm2-135m";
const out = {};
const check = (cond, what) => {
  if (!cond) throw new Error(`check failed: ${what}`);
};

const chat = await client.chat.completions.create({
  model, messages: [{ role: "user", content: [{ type: "text", text: "Name a primary colour." }] }], max_tokens: 10, seed: 1,
});
check(chat.choices[0].message.content, "chat content");
out.chat = chat.receipt;

let text = "";
let streamReceipt = null;
const stream = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Count to three." }], max_tokens: 10, stream: true,
  stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  for (const c of chunk.choices) {
    if (c.delta?.content) text += c.delta.content;
    if (c.finish_reason) streamReceipt = chunk.vouch?.receipt;
  }
}
check(text && streamReceipt, "stream text and receipt");
out.stream = streamReceipt;

const schema = {
  type: "object", properties: { colour: { type: "string", enum: ["red", "green", "blue"] }, sure: { type: "boolean" } },
  required: ["colour", "sure"], additionalProperties: false,
};
const structured = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Pick a colour." }], max_tokens: 24,
  response_format: { type: "json_schema", json_schema: { name: "pick", schema, strict: true } },
});
const picked = JSON.parse(structured.choices[0].message.content);
check(["red", "green", "blue"].includes(picked.colour) && typeof picked.sure === "boolean", "schema output");
out.structured = structured.receipt;

const tools = [{
  type: "function",
  function: {
    name: "get_time", description: "The time in a city",
    parameters: { type: "object", properties: { city: { type: "string", maxLength: 20 } }, required: ["city"], additionalProperties: false },
  },
}];
const ask = [{ role: "user", content: "What time is it in Tokyo?" }];
const called = await client.chat.completions.create({ model, messages: ask, tools, tool_choice: "required", max_tokens: 40 });
check(called.choices[0].finish_reason === "tool_calls", "finish_reason tool_calls");
const call = called.choices[0].message.tool_calls[0];
check(call.function.name === "get_time" && typeof JSON.parse(call.function.arguments).city === "string", "call arguments");
const follow = await client.chat.completions.create({
  model, max_tokens: 16, tools, tool_choice: "none",
  messages: [...ask, called.choices[0].message, { role: "tool", tool_call_id: call.id, content: "09:30" }],
});
check(follow.choices[0].message.content, "follow-up content");
out.tool = called.receipt;
out.followup = follow.receipt;

const resp = await client.responses.create({ model, input: "Say hello.", max_output_tokens: 10 });
check(resp.output_text, "responses output_text");
out.responses = resp.receipt;

const emb = await client.embeddings.create({ model: "minilm-l6", input: "A cat sat on the mat." });
check(emb.data[0].embedding.length === 384, "embedding length");

// Each receipt survives JavaScript's JSON round trip (seeds above 2^53 are strings).
const verdicts = {};
for (const [what, id] of Object.entries(out)) {
  const r = await (await fetch(`${base}/receipts/${id}`)).json();
  const back = JSON.parse(JSON.stringify(r));
  const v = await (await fetch(`${base}/verify`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(back) })).json();
  check(v.signature?.ok === true && v.content_ok === true && v.status !== "invalid", `${what} verdict ${JSON.stringify(v)}`);
  verdicts[what] = v.status;
}
out.verdicts = verdicts;
console.log(JSON.stringify(out));
