//! Function calling in OpenAI's shape over a model's chat turns.
//!
//! The tools are written into the system turn (their JSON definitions inside `<tools>`),
//! the model answers a call as `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`,
//! earlier calls and tool results are written back the same way (results inside
//! `<tool_response>` in a user turn). Everything is prompt text, so the receipt's prompt
//! commits to the tools offered and the conversation so far.
//!
//! `tool_choice` `required` or a named function constrains the answer with a Lark grammar
//! (one or more calls, each call's arguments matching that tool's parameter schema); the
//! grammar is signed into the receipt and every token is re-checked against it. With
//! `auto`, the model writes freely and calls it made are read back from its text.

use serde_json::{json, Value};
use vouch_inference::chat::Message;
use vouch_types::{Constraint, Hash32};

use crate::error::ApiError;

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 64;

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// A JSON schema for the arguments object.
    pub parameters: Value,
}

/// What `tool_choice` asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// No call (the tools are not offered).
    None,
    /// The model decides.
    Auto,
    /// At least one call, to any tool.
    Required,
    /// Exactly this function.
    Named(String),
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub arguments: Value,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Reads `tools` and `tool_choice` as OpenAI defines them; each error names its field.
pub fn parse(
    tools: Option<&[Value]>,
    choice: Option<&Value>,
) -> Result<(Vec<Tool>, Choice), ApiError> {
    let mut out = Vec::new();
    for (i, t) in tools.unwrap_or_default().iter().enumerate() {
        let bad = |m: String| ApiError::bad_request(m).with_param(format!("tools[{i}]"));
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(format!("tools[{i}].type must be \"function\"")));
        }
        let f = t
            .get("function")
            .ok_or_else(|| bad(format!("tools[{i}].function is required")))?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        if !valid_name(name) {
            return Err(bad(format!(
                "tools[{i}].function.name must be 1 to 64 letters, digits, _ or -"
            )));
        }
        if out.iter().any(|x: &Tool| x.name == name) {
            return Err(bad(format!("tools[{i}]: two tools are named {name:?}")));
        }
        let parameters = match f.get("parameters") {
            None => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => {
                return Err(bad(format!(
                    "tools[{i}].function.parameters must be a JSON schema object"
                )))
            }
        };
        out.push(Tool {
            name: name.to_string(),
            description: f
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_string),
            parameters,
        });
    }
    if out.len() > MAX_TOOLS {
        return Err(ApiError::bad_request(format!("at most {MAX_TOOLS} tools")).with_param("tools"));
    }
    let bad_choice = |m: &str| ApiError::bad_request(m.to_string()).with_param("tool_choice");
    let choice = match choice {
        None if out.is_empty() => Choice::None,
        None => Choice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => Choice::None,
            "auto" => Choice::Auto,
            "required" => Choice::Required,
            _ => {
                return Err(bad_choice(
                    "tool_choice must be none, auto, required or a function",
                ))
            }
        },
        Some(v) => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad_choice("tool_choice names no function"))?;
            Choice::Named(name.to_string())
        }
    };
    match &choice {
        Choice::Required | Choice::Auto if out.is_empty() => {
            return Err(bad_choice(
                "tool_choice asks for a call but no tools are given",
            ))
        }
        Choice::Named(n) if !out.iter().any(|t| &t.name == n) => {
            return Err(bad_choice(&format!(
                "tool_choice names {n:?}, which is not in tools"
            )))
        }
        _ => {}
    }
    Ok((out, choice))
}

/// The tools section of the system turn.
pub fn system_block(tools: &[Tool]) -> String {
    let mut s = String::from(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
         You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
    );
    for t in tools {
        let mut f = json!({"name": t.name, "parameters": t.parameters});
        if let Some(d) = &t.description {
            f["description"] = json!(d);
        }
        s.push('\n');
        s.push_str(&json!({"type": "function", "function": f}).to_string());
    }
    s.push_str(
        "\n</tools>\n\nFor each function call, return a json object with function name and \
         arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
         {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
    );
    s
}

/// Adds the tools to the system turn (after the given system text, or after the model's
/// default system message when the conversation has none).
pub fn offer(messages: &mut Vec<Message>, tools: &[Tool], system_default: Option<&str>) {
    if tools.is_empty() {
        return;
    }
    let block = system_block(tools);
    match messages.first_mut() {
        Some(m) if m.role == "system" => {
            m.content = format!("{}\n\n{block}", m.content);
        }
        _ => {
            let content = match system_default {
                Some(d) => format!("{d}\n\n{block}"),
                None => block,
            };
            messages.insert(
                0,
                Message {
                    role: "system".into(),
                    content,
                },
            );
        }
    }
}

/// How an earlier call reads in the prompt.
pub fn call_text(name: &str, arguments: &Value) -> String {
    format!(
        "<tool_call>\n{}\n</tool_call>",
        json!({"name": name, "arguments": arguments})
    )
}

/// How a tool's result reads in the prompt (a user turn).
pub fn response_text(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// Options for the JSON inside calls: OpenAI's separators, no free whitespace.
fn x_guidance() -> Value {
    json!({"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": false})
}

/// The grammar a forced choice puts on the answer: one or more calls (to `Named`'s tool
/// only, when named), each `{"name": ..., "arguments": ...}` with the arguments matching
/// that tool's schema. `None` for `auto` and `none`.
pub fn grammar(tools: &[Tool], choice: &Choice) -> Option<Constraint> {
    let allowed: Vec<&Tool> = match choice {
        Choice::None | Choice::Auto => return None,
        Choice::Required => tools.iter().collect(),
        Choice::Named(n) => tools.iter().filter(|t| &t.name == n).collect(),
    };
    let variants: Vec<Value> = allowed
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                "required": ["name", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    let mut schema = if variants.len() == 1 {
        variants.into_iter().next().expect("one")
    } else {
        json!({"anyOf": variants})
    };
    schema["x-guidance"] = x_guidance();
    let repeat = if matches!(choice, Choice::Named(_)) {
        ""
    } else {
        " (\"\\n\" call)*"
    };
    Some(Constraint::lark(format!(
        "start: call{repeat}\ncall: \"<tool_call>\\n\" args \"\\n</tool_call>\"\nargs: %json {schema}\n"
    )))
}

/// The calls in a model's answer, and the text around them (`None` when empty). Text
/// without a well-formed call to an offered tool is all content.
pub fn read_calls(output: &str, tools: &[Tool]) -> (Option<String>, Vec<Call>) {
    let mut calls = Vec::new();
    let mut text = String::new();
    let mut rest = output;
    while let Some(start) = rest.find("<tool_call>") {
        let after = &rest[start + "<tool_call>".len()..];
        let Some(end) = after.find("</tool_call>") else {
            break;
        };
        let body = after[..end].trim();
        let parsed = serde_json::from_str::<Value>(body).ok().and_then(|v| {
            let name = v.get("name")?.as_str()?.to_string();
            let arguments = v.get("arguments").cloned().unwrap_or(json!({}));
            (tools.iter().any(|t| t.name == name) && arguments.is_object())
                .then_some(Call { name, arguments })
        });
        match parsed {
            Some(c) => {
                text.push_str(&rest[..start]);
                calls.push(c);
            }
            None => {
                text.push_str(&rest[..start + "<tool_call>".len() + end + "</tool_call>".len()])
            }
        }
        rest = &after[end + "</tool_call>".len()..];
    }
    text.push_str(rest);
    let text = text.trim();
    ((!text.is_empty()).then(|| text.to_string()), calls)
}

/// A call's id: derived from the receipt that holds it, so it is the same on every read.
pub fn call_id(receipt: &Hash32, index: usize) -> String {
    format!("call_{}_{index}", &receipt.to_hex()[..16])
}

/// The calls in OpenAI's `tool_calls` shape (arguments as a JSON string).
pub fn tool_calls_json(receipt: &Hash32, calls: &[Call]) -> Value {
    json!(calls
        .iter()
        .enumerate()
        .map(
            |(i, c)| json!({"id": call_id(receipt, i), "type": "function",
            "function": {"name": c.name, "arguments": c.arguments.to_string()}})
        )
        .collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Vec<Tool> {
        let (t, _) = parse(
            Some(&[json!({"type": "function", "function": {"name": "get_weather",
                "description": "Weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}})]),
            None,
        )
        .unwrap();
        t
    }

    #[test]
    fn calls_are_read_back_and_malformed_ones_stay_text() {
        let tools = weather();
        let (text, calls) = read_calls(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
            &tools,
        );
        assert_eq!(text, None);
        assert_eq!(calls[0].arguments["city"], "Paris");
        let (text, calls) = read_calls("<tool_call>{\"name\": \"other\"}</tool_call> hi", &tools);
        assert!(calls.is_empty());
        assert!(text.unwrap().contains("other"));
        let (text, calls) = read_calls("just words", &tools);
        assert_eq!((text.as_deref(), calls.len()), (Some("just words"), 0));
    }

    #[test]
    fn choices_are_checked_against_the_tools() {
        let t = [json!({"type": "function", "function": {"name": "f"}})];
        assert_eq!(parse(Some(&t), None).unwrap().1, Choice::Auto);
        assert!(parse(None, Some(&json!("required"))).is_err());
        assert!(parse(
            Some(&t),
            Some(&json!({"type": "function", "function": {"name": "g"}}))
        )
        .is_err());
        assert!(parse(
            Some(&[json!({"type": "function", "function": {"name": "a b"}})]),
            None
        )
        .is_err());
        let named = parse(
            Some(&t),
            Some(&json!({"type": "function", "function": {"name": "f"}})),
        )
        .unwrap()
        .1;
        assert_eq!(named, Choice::Named("f".into()));
        let g = grammar(&parse(Some(&t), None).unwrap().0, &named).unwrap();
        assert!(g.source.contains("\"const\":\"f\""), "{}", g.source);
        assert!(grammar(&[], &Choice::Auto).is_none());
    }
}
