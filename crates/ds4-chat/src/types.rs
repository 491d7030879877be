//! Chat messages as the official encoder reads them, with serde so API requests map
//! onto them directly.
//!
//! JSON that the encoder re-serializes (tool schemas, `response_format`) is kept as
//! the client's raw text ([`RawJson`]) because the rendered bytes depend on the
//! client's key order. Deserialize these types from JSON text
//! (`serde_json::from_str` / `from_slice`), not from a `serde_json::Value`: raw
//! values cannot be recovered from an already-parsed tree.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

pub use crate::segments::Task;

/// Message roles of `encoding_dsv4.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    /// A tool result. The legacy OpenAI `function` role is accepted as an alias.
    #[serde(alias = "function")]
    Tool,
    /// Rendered as a user turn (`<｜User｜>`); the official README reserves it for
    /// DeepSeek's search agent.
    Developer,
    LatestReminder,
}

/// A JSON value kept as the exact text the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(String);

impl RawJson {
    /// Wrap JSON text, checking that it is one valid JSON value.
    pub fn new(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        let text = text.into();
        serde_json::from_str::<&RawValue>(&text)?;
        Ok(Self(text))
    }

    pub fn get(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        Ok(Self(raw.get().to_owned()))
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.clone()).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

/// One part of an array-valued `content`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// `content`: a string, or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl Content {
    /// The text the encoder writes. Parts follow the official rule for tool-result
    /// lists: text parts joined with `"\n\n"`, any other part as `[Unsupported TYPE]`.
    pub fn flatten(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Content::Text(s) => s.as_str().into(),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| {
                    if p.kind == "text" {
                        p.text.clone().unwrap_or_default()
                    } else {
                        format!("[Unsupported {}]", p.kind)
                    }
                })
                .collect::<Vec<_>>()
                .join("\n\n")
                .into(),
        }
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Content::Text(s.to_owned())
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Content::Text(s)
    }
}

/// A tool definition (OpenAI shape `{"type":"function","function":{…}}`). The
/// function object is rendered into the prompt re-serialized the way Python's
/// `json.dumps(ensure_ascii=False)` writes it, in the client's key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    #[serde(rename = "type", default = "default_function_type")]
    pub kind: String,
    pub function: RawJson,
}

fn default_function_type() -> String {
    "function".to_owned()
}

impl Tool {
    /// A tool from the JSON text of its function object
    /// (`{"name":…,"description":…,"parameters":…}`), e.g. built by the server from
    /// an Anthropic `{name, description, input_schema}` tool.
    pub fn from_function_json(text: impl Into<String>) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind: default_function_type(),
            function: RawJson::new(text)?,
        })
    }
}

/// Tool-call arguments as JSON text. OpenAI sends a JSON-encoded string; an object
/// (as vLLM accepts) is kept as its raw text; `null` becomes the empty string.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Arguments(pub String);

impl<'de> Deserialize<'de> for Arguments {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let text = raw.get();
        if text.starts_with('"') {
            serde_json::from_str::<String>(text)
                .map(Arguments)
                .map_err(D::Error::custom)
        } else if text == "null" {
            Ok(Arguments(String::new()))
        } else {
            Ok(Arguments(text.to_owned()))
        }
    }
}

impl Serialize for Arguments {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Arguments,
}

/// An assistant tool call, OpenAI shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default = "default_function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

impl ToolCall {
    pub fn new(id: Option<&str>, name: &str, arguments_json: &str) -> Self {
        Self {
            id: id.map(str::to_owned),
            kind: default_function_type(),
            function: FunctionCall {
                name: name.to_owned(),
                arguments: Arguments(arguments_json.to_owned()),
            },
        }
    }
}

/// One chat message. Unknown fields (e.g. the official data's `mask`) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For `tool` messages: which call this result answers (orders the results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool schemas attached to a system or developer message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<RawJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// Leave the assistant's EOS off (prefix continuation).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wo_eos: bool,
}

impl Message {
    fn with(role: Role, content: &str) -> Self {
        Self {
            role,
            content: Some(content.into()),
            reasoning_content: None,
            tool_calls: None,
            tool_call_id: None,
            name: None,
            tools: None,
            response_format: None,
            task: None,
            wo_eos: false,
        }
    }

    pub fn system(content: &str) -> Self {
        Self::with(Role::System, content)
    }

    pub fn user(content: &str) -> Self {
        Self::with(Role::User, content)
    }

    pub fn developer(content: &str) -> Self {
        Self::with(Role::Developer, content)
    }

    pub fn latest_reminder(content: &str) -> Self {
        Self::with(Role::LatestReminder, content)
    }

    pub fn assistant(content: &str) -> Self {
        Self::with(Role::Assistant, content)
    }

    pub fn tool(tool_call_id: &str, content: &str) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.to_owned()),
            ..Self::with(Role::Tool, content)
        }
    }

    pub fn with_reasoning(mut self, reasoning: &str) -> Self {
        self.reasoning_content = Some(reasoning.to_owned());
        self
    }

    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> Self {
        self.tool_calls = Some(calls);
        self
    }

    pub fn with_tools(mut self, tools: Vec<Tool>) -> Self {
        self.tools = Some(tools);
        self
    }

    pub fn with_task(mut self, task: Task) -> Self {
        self.task = Some(task);
        self
    }
}

/// `thinking_mode` of the official encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThinkingMode {
    /// Non-thinking: the assistant turn opens with `</think>`.
    Chat,
    /// The assistant turn opens with `<think>`.
    Thinking,
}

/// `reasoning_effort` of the official encoder (original V4 checkpoint: two tiers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningEffort {
    /// Default; renders no prefix.
    High,
    /// "Think Max": the `REASONING_EFFORT_MAX` prefix after BOS (thinking mode only).
    Max,
}

/// The model card recommends at least 384K context for Think Max; ds4 falls back to
/// high below this (`DS4_THINK_MAX_MIN_CONTEXT`).
pub const THINK_MAX_MIN_CONTEXT: usize = 393_216;

impl ReasoningEffort {
    /// The effort actually used for a context of `ctx` tokens: Max needs
    /// [`THINK_MAX_MIN_CONTEXT`], otherwise it is downgraded to High.
    pub fn gate_for_context(self, ctx: usize) -> Self {
        match self {
            ReasoningEffort::Max if ctx < THINK_MAX_MIN_CONTEXT => ReasoningEffort::High,
            e => e,
        }
    }
}

/// The thinking setting an API `reasoning_effort` string asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiEffort {
    /// `none`: thinking off (chat mode).
    Disabled,
    Enabled(ReasoningEffort),
}

/// An API effort string that is not one of the accepted values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reasoning effort {0:?} (expected none, minimal, low, medium, high, xhigh or max)")]
pub struct UnknownEffort(pub String);

impl ApiEffort {
    /// ds4's mapping (product-surface §2.4): `max` → Max; `xhigh`, `high`, `medium`,
    /// `low`, `minimal` → High; `none` → thinking off; anything else is an error
    /// (a 400 for the server).
    pub fn parse(s: &str) -> Result<Self, UnknownEffort> {
        match s {
            "max" => Ok(ApiEffort::Enabled(ReasoningEffort::Max)),
            "xhigh" | "high" | "medium" | "low" | "minimal" => {
                Ok(ApiEffort::Enabled(ReasoningEffort::High))
            }
            "none" => Ok(ApiEffort::Disabled),
            other => Err(UnknownEffort(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_request_messages_deserialize() {
        let json = r#"[
            {"role":"system","content":"S"},
            {"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{}}]},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"x\": 1}"}},
                {"id":"c2","type":"function","function":{"name":"g","arguments":{"y":[1, 2]}}},
                {"id":"c3","type":"function","function":{"name":"h","arguments":null}}]},
            {"role":"function","tool_call_id":"c1","content":"r"},
            {"role":"developer","content":"d","tools":[{"type":"function","function":{"name":"f","z":1.50}}],
             "response_format":{"type":"json_object"},"mask":1}
        ]"#;
        let msgs: Vec<Message> = serde_json::from_str(json).expect("parses");
        assert_eq!(
            msgs[1].content.as_ref().map(|c| c.flatten().into_owned()),
            Some("a\n\n[Unsupported image_url]".to_owned())
        );
        let calls = msgs[2].tool_calls.as_ref().expect("calls");
        assert_eq!(calls[0].function.arguments.0, "{\"x\": 1}");
        assert_eq!(calls[1].function.arguments.0, "{\"y\":[1, 2]}");
        assert_eq!(calls[2].function.arguments.0, "");
        assert_eq!(msgs[3].role, Role::Tool);
        let tools = msgs[4].tools.as_ref().expect("tools");
        assert_eq!(tools[0].function.get(), r#"{"name":"f","z":1.50}"#);
        assert_eq!(
            msgs[4].response_format.as_ref().map(RawJson::get),
            Some(r#"{"type":"json_object"}"#)
        );
        // Serialization round trip keeps the raw texts.
        let back: Vec<Message> =
            serde_json::from_str(&serde_json::to_string(&msgs).expect("ser")).expect("de");
        assert_eq!(back, msgs);
    }

    #[test]
    fn unknown_role_is_rejected() {
        assert!(serde_json::from_str::<Message>(r#"{"role":"narrator","content":"x"}"#).is_err());
    }

    #[test]
    fn api_effort_mapping() {
        assert_eq!(
            ApiEffort::parse("max"),
            Ok(ApiEffort::Enabled(ReasoningEffort::Max))
        );
        for s in ["xhigh", "high", "medium", "low", "minimal"] {
            assert_eq!(
                ApiEffort::parse(s),
                Ok(ApiEffort::Enabled(ReasoningEffort::High))
            );
        }
        assert_eq!(ApiEffort::parse("none"), Ok(ApiEffort::Disabled));
        assert!(ApiEffort::parse("ultra").is_err());
        assert_eq!(
            ReasoningEffort::Max.gate_for_context(393_215),
            ReasoningEffort::High
        );
        assert_eq!(
            ReasoningEffort::Max.gate_for_context(393_216),
            ReasoningEffort::Max
        );
        assert_eq!(
            ReasoningEffort::High.gate_for_context(1 << 20),
            ReasoningEffort::High
        );
    }
}
