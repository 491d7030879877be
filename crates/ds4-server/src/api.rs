//! Request bodies of the four APIs → a rendered, tokenized [`GenRequest`].
//!
//! Bodies are parsed from their JSON text (never via `serde_json::Value`) so tool
//! schemas and tool-call arguments keep the client's key order and bytes.

use ds4_chat::{
    ApiEffort, Arguments, Content, EncodeOptions, FunctionCall, Message, Prompt, ReasoningEffort,
    Role, ThinkingMode, Tool, ToolCall, encode_single_turn,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::{ApiError, json_error};
use crate::prompt::{splice_raw, tokenize};
use crate::sampling::SamplingParams;
use crate::worker::{Api, GenRequest};
use crate::{AppState, ServerConfig};

/// Parse a request body; a type error names the field's path
/// (`invalid JSON request: messages[0].role: unknown variant ...`).
pub fn parse<T: DeserializeOwned>(body: &[u8], api: Api) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = if path.is_empty() || path == "." {
            format!("invalid JSON request: {inner}")
        } else {
            format!("invalid JSON request: {path}: {inner}")
        };
        ApiError::bad_request(msg).for_api(api)
    })?;
    de.end().map_err(|e| json_error(&e).for_api(api))?;
    Ok(v)
}

/// `thinking`: a bool or `{"type":"enabled"|"disabled", …}`.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ThinkingCtl {
    Bool(bool),
    Obj {
        #[serde(rename = "type")]
        kind: String,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Thinking and sampling fields shared by the APIs (each API reads its subset).
#[derive(Deserialize, Default)]
pub struct Knobs {
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    pub thinking: Option<ThinkingCtl>,
    pub think: Option<bool>,
    pub reasoning_effort: Option<String>,
    #[serde(default)]
    pub stream: bool,
}

/// The thinking decision: explicit controls, then the model alias, then on/high.
pub fn resolve_thinking(
    effort: Option<&str>,
    thinking: Option<&ThinkingCtl>,
    think: Option<bool>,
    model: &str,
    ctx: usize,
) -> Result<Option<ReasoningEffort>, ApiError> {
    let effort = effort
        .map(ApiEffort::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let flag = match thinking {
        Some(ThinkingCtl::Bool(b)) => Some(*b),
        Some(ThinkingCtl::Obj { kind }) => match kind.as_str() {
            "enabled" | "adaptive" => Some(true),
            "disabled" => Some(false),
            other => {
                return Err(ApiError::bad_request(format!(
                    "thinking.type must be \"enabled\" or \"disabled\", got {other:?}"
                )));
            }
        },
        None => think,
    };
    let on = match (effort, flag) {
        (Some(ApiEffort::Disabled), _) | (_, Some(false)) => None,
        (Some(ApiEffort::Enabled(e)), _) => Some(e),
        (None, Some(true)) => Some(ReasoningEffort::High),
        (None, None) => match model {
            "deepseek-chat" => None,
            _ => Some(ReasoningEffort::High),
        },
    };
    Ok(on.map(|e| e.gate_for_context(ctx)))
}

/// Client sampling knobs, or the fixed thinking sampler.
pub fn sampling(k: &Knobs, thinking: bool) -> SamplingParams {
    let seed = match k.seed {
        Some(s) if s > 0 => s as u64,
        _ => rand::random(),
    };
    if thinking {
        return SamplingParams::thinking(seed);
    }
    SamplingParams {
        temperature: k.temperature.unwrap_or(1.0),
        top_k: k.top_k.unwrap_or(0).max(0) as usize,
        top_p: k.top_p.unwrap_or(1.0),
        min_p: k.min_p.unwrap_or(0.05),
        seed,
    }
}

fn stops(s: Option<Stop>) -> Vec<String> {
    match s {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

/// Everything but the prompt, common to the APIs.
pub struct Common {
    pub api: Api,
    pub thinking: Option<ReasoningEffort>,
    pub tools: bool,
    pub sampling: SamplingParams,
    pub max_tokens: Option<u64>,
    pub stops: Vec<String>,
    pub stream: bool,
    pub param: &'static str,
}

/// Tokenize, check the context, clamp the output budget.
pub fn finish(
    cfg: &ServerConfig,
    app: &AppState,
    prompt: Prompt,
    c: Common,
) -> Result<GenRequest, ApiError> {
    let tokens = tokenize(&app.tokenizer, &prompt)
        .map_err(|e| ApiError::bad_request(e.to_string()).for_api(c.api))?;
    if tokens.len() >= cfg.ctx {
        return Err(ApiError::context_overflow(tokens.len(), cfg.ctx, c.param).for_api(c.api));
    }
    let room = cfg.ctx - tokens.len();
    let want = c.max_tokens.map_or(cfg.default_max_tokens, |n| n as usize);
    Ok(GenRequest {
        api: c.api,
        prompt_text: prompt.render_to_string(),
        prompt,
        tokens,
        thinking: c.thinking.is_some(),
        tools: c.tools,
        sampling: c.sampling,
        max_tokens: want.min(room),
        stops: c.stops,
        stream: c.stream,
    })
}

fn check_tool(function_json: &str, i: usize) -> Result<Tool, ApiError> {
    #[derive(Deserialize)]
    struct Named {
        name: Option<serde_json::Value>,
    }
    let named: Named = serde_json::from_str(function_json).map_err(|e| {
        ApiError::bad_request(format!(
            "tools[{i}]: the function must be a JSON object: {e}"
        ))
    })?;
    match named.name {
        Some(serde_json::Value::String(n)) if !n.is_empty() => {}
        _ => {
            return Err(ApiError::bad_request(format!(
                "tools[{i}]: a tool needs a non-empty string \"name\""
            )));
        }
    }
    Tool::from_function_json(function_json)
        .map_err(|e| ApiError::bad_request(format!("tools[{i}]: {e}")))
}

/// Render a conversation: attach tools to the first system message (or a new empty
/// one at the head), substitute exact DSML replays, encode.
pub fn render_conversation(
    app: &AppState,
    mut messages: Vec<Message>,
    tools: Vec<Tool>,
    thinking: Option<ReasoningEffort>,
) -> Result<Prompt, ApiError> {
    if !tools.is_empty() {
        match messages.iter_mut().find(|m| m.role == Role::System) {
            Some(m) => m.tools = Some(tools),
            None => {
                let mut sys = Message::system("");
                sys.tools = Some(tools);
                messages.insert(0, sys);
            }
        }
    }
    let mut replays: Vec<(String, std::sync::Arc<str>)> = Vec::new();
    if app.shared.exact_replay
        && let Ok(map) = app.shared.replay.lock()
    {
        for m in messages.iter_mut().filter(|m| m.role == Role::Assistant) {
            let Some(calls) = &m.tool_calls else { continue };
            let ids: Option<Vec<&str>> = calls.iter().map(|c| c.id.as_deref()).collect();
            let Some(block) = ids.and_then(|ids| map.block_for(&ids)) else {
                continue;
            };
            // A noncharacter-delimited marker cannot come from a client by accident.
            let marker = format!("\u{FDD0}ds4-replay-{}\u{FDD0}", replays.len());
            let mut content = m
                .content
                .as_ref()
                .map(|c| c.flatten().into_owned())
                .unwrap_or_default();
            content.push_str(&marker);
            m.content = Some(Content::Text(content));
            m.tool_calls = None;
            replays.push((marker, block));
        }
    }
    let opts = EncodeOptions {
        thinking_mode: if thinking.is_some() {
            ThinkingMode::Thinking
        } else {
            ThinkingMode::Chat
        },
        reasoning_effort: thinking,
        ..EncodeOptions::default()
    };
    let mut prompt = ds4_chat::encode_messages(&messages, &opts)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for (marker, block) in replays {
        prompt = splice_raw(prompt, &marker, &block);
    }
    Ok(prompt)
}

/// Array content → its text items concatenated (images and other parts dropped).
fn flatten_parts(m: &mut Message) {
    if let Some(Content::Parts(parts)) = &m.content {
        let text: String = parts.iter().filter_map(|p| p.text.as_deref()).collect();
        m.content = Some(Content::Text(text));
    }
}

// ---------------------------------------------------------------- chat

#[derive(Deserialize)]
pub struct ChatRequest {
    pub messages: Option<Vec<Message>>,
    pub tools: Option<Vec<Tool>>,
    pub tool_choice: Option<Box<RawValue>>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub stop: Option<Stop>,
    pub stream_options: Option<StreamOptions>,
}

pub struct Built {
    pub req: GenRequest,
    pub model: String,
    pub include_usage: bool,
    pub reasoning_summary: bool,
}

fn model_name(k: &Knobs) -> String {
    k.model
        .clone()
        .unwrap_or_else(|| crate::MODEL_ID.to_owned())
}

pub fn chat(cfg: &ServerConfig, app: &AppState, body: &[u8]) -> Result<Built, ApiError> {
    let r: ChatRequest = parse(body, Api::Chat)?;
    // Parsed on its own: `#[serde(flatten)]` would buffer the body and lose the
    // raw JSON texts of tool schemas and arguments.
    let knobs: Knobs = parse(body, Api::Chat)?;
    let model = model_name(&knobs);
    let Some(mut messages) = r.messages else {
        return Err(ApiError::bad_request("missing messages"));
    };
    for m in &mut messages {
        flatten_parts(m);
        // ds4 hoists developer messages into the system block.
        if m.role == Role::Developer {
            m.role = Role::System;
        }
        if let Some(calls) = &mut m.tool_calls {
            calls.retain(|c| !c.function.name.is_empty());
        }
    }
    let tools_off = r
        .tool_choice
        .as_ref()
        .is_some_and(|t| t.get() == "\"none\"");
    let mut tools = Vec::new();
    if !tools_off {
        for (i, t) in r.tools.unwrap_or_default().iter().enumerate() {
            tools.push(check_tool(t.function.get(), i)?);
        }
    }
    let thinking = resolve_thinking(
        knobs.reasoning_effort.as_deref(),
        knobs.thinking.as_ref(),
        knobs.think,
        &model,
        cfg.ctx,
    )?;
    let has_tools = !tools.is_empty();
    let prompt = render_conversation(app, messages, tools, thinking)?;
    let common = Common {
        api: Api::Chat,
        thinking,
        tools: has_tools,
        sampling: sampling(&knobs, thinking.is_some()),
        max_tokens: r.max_completion_tokens.or(r.max_tokens),
        stops: stops(r.stop),
        stream: knobs.stream,
        param: "messages",
    };
    Ok(Built {
        req: finish(cfg, app, prompt, common)?,
        model,
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
        reasoning_summary: false,
    })
}

// ---------------------------------------------------------------- completions

#[derive(Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<serde_json::Value>),
}

#[derive(Deserialize)]
pub struct CompletionRequest {
    pub prompt: Option<PromptField>,
    pub max_tokens: Option<u64>,
    pub stop: Option<Stop>,
    pub stream_options: Option<StreamOptions>,
}

pub fn completions(cfg: &ServerConfig, app: &AppState, body: &[u8]) -> Result<Built, ApiError> {
    let r: CompletionRequest = parse(body, Api::Completions)?;
    let knobs: Knobs = parse(body, Api::Completions)?;
    let model = model_name(&knobs);
    let text = match r.prompt {
        Some(PromptField::One(s)) => s,
        Some(PromptField::Many(v)) => v
            .iter()
            .find_map(|x| x.as_str().map(str::to_owned))
            .ok_or_else(|| ApiError::bad_request("missing prompt"))?,
        None => return Err(ApiError::bad_request("missing prompt")),
    };
    let thinking = resolve_thinking(
        knobs.reasoning_effort.as_deref(),
        knobs.thinking.as_ref(),
        knobs.think,
        &model,
        cfg.ctx,
    )?;
    let mode = if thinking.is_some() {
        ThinkingMode::Thinking
    } else {
        ThinkingMode::Chat
    };
    // ds4 wraps the prompt in a chat turn; the raw output is returned.
    let prompt = encode_single_turn(Some("You are a helpful assistant"), &text, mode, thinking);
    let common = Common {
        api: Api::Completions,
        thinking,
        tools: false,
        sampling: sampling(&knobs, thinking.is_some()),
        max_tokens: r.max_tokens,
        stops: stops(r.stop),
        stream: knobs.stream,
        param: "prompt",
    };
    Ok(Built {
        req: finish(cfg, app, prompt, common)?,
        model,
        include_usage: r.stream_options.is_some_and(|o| o.include_usage),
        reasoning_summary: false,
    })
}

// ---------------------------------------------------------------- anthropic

#[derive(Deserialize)]
pub struct OutputConfig {
    pub effort: Option<String>,
}

#[derive(Deserialize)]
pub struct AnthropicRequest {
    pub messages: Option<Vec<AnthropicMessage>>,
    pub system: Option<Box<RawValue>>,
    pub tools: Option<Vec<Box<RawValue>>>,
    pub tool_choice: Option<AnthropicToolChoice>,
    pub max_tokens: Option<u64>,
    pub stop_sequences: Option<Vec<String>>,
    pub output_config: Option<OutputConfig>,
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub thinking: Option<ThinkingCtl>,
    pub reasoning_effort: Option<String>,
    #[serde(default)]
    pub stream: bool,
}

#[derive(Deserialize)]
pub struct AnthropicToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Deserialize)]
pub struct AnthropicMessage {
    pub role: Role,
    pub content: Box<RawValue>,
}

/// A content block, classified by its own `type` whatever the member order.
#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    thinking: Option<String>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Box<RawValue>>,
    tool_use_id: Option<String>,
    content: Option<Box<RawValue>>,
}

/// A string, or the text of a list of blocks/strings joined with `sep`.
fn text_of(raw: &RawValue, sep: &str, what: &str) -> Result<String, ApiError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Part {
        S(String),
        B { text: Option<String> },
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum T {
        S(String),
        Null(()),
        L(Vec<Part>),
    }
    let t: T = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON request: {what}: {e}")))?;
    Ok(match t {
        T::S(s) => s,
        T::Null(()) => String::new(),
        T::L(parts) => parts
            .into_iter()
            .filter_map(|p| match p {
                Part::S(s) => Some(s),
                Part::B { text } => text,
            })
            .filter(|s| !s.starts_with("x-anthropic-"))
            .collect::<Vec<_>>()
            .join(sep),
    })
}

pub fn messages(cfg: &ServerConfig, app: &AppState, body: &[u8]) -> Result<Built, ApiError> {
    let api = Api::Messages;
    let r: AnthropicRequest = parse(body, api)?;
    let model = r
        .model
        .clone()
        .unwrap_or_else(|| crate::MODEL_ID.to_owned());
    let Some(msgs) = r.messages else {
        return Err(ApiError::bad_request("missing messages").for_api(api));
    };
    let mut out = Vec::new();
    let mut seen_calls: Vec<String> = Vec::new();
    if let Some(sys) = &r.system {
        let s = text_of(sys, "\n", "system").map_err(|e| e.for_api(api))?;
        out.push(Message::system(&s));
    }
    for (mi, m) in msgs.iter().enumerate() {
        let raw = m.content.get();
        if raw.starts_with('"') {
            let s: String = serde_json::from_str(raw).map_err(|e| json_error(&e).for_api(api))?;
            out.push(Message {
                content: Some(Content::Text(s)),
                ..Message::user("")
            });
            if let Some(last) = out.last_mut() {
                last.role = m.role;
            }
            continue;
        }
        let blocks: Vec<Block> = serde_json::from_str(raw).map_err(|e| {
            ApiError::bad_request(format!("invalid JSON request: messages[{mi}].content: {e}"))
                .for_api(api)
        })?;
        let mut text = String::new();
        let mut reasoning: Option<String> = None;
        let mut calls = Vec::new();
        let mut results = Vec::new();
        for b in blocks {
            match b.kind.as_str() {
                "text" => text.push_str(b.text.as_deref().unwrap_or("")),
                "thinking" => reasoning
                    .get_or_insert_default()
                    .push_str(b.thinking.as_deref().unwrap_or("")),
                "tool_use" => {
                    let (Some(name), Some(input)) = (b.name, b.input) else {
                        return Err(ApiError::bad_request(format!(
                            "messages[{mi}]: tool_use needs name and input"
                        ))
                        .for_api(api));
                    };
                    seen_calls.extend(b.id.clone());
                    calls.push(ToolCall {
                        id: b.id,
                        kind: "function".into(),
                        function: FunctionCall {
                            name,
                            arguments: Arguments(input.get().to_owned()),
                        },
                    });
                }
                "tool_result" => {
                    let id = b.tool_use_id.as_deref().unwrap_or("");
                    if !seen_calls.iter().any(|c| c == id) {
                        return Err(ApiError::bad_request(format!(
                            "Anthropic continuation state is not available for tool_use_id {id}; retry by replaying the full messages history"
                        ))
                        .for_api(api));
                    }
                    let content = match &b.content {
                        Some(c) => {
                            text_of(c, "", "tool_result.content").map_err(|e| e.for_api(api))?
                        }
                        None => String::new(),
                    };
                    results.push(Message::tool(
                        b.tool_use_id.as_deref().unwrap_or(""),
                        &content,
                    ));
                }
                _ => {}
            }
        }
        match m.role {
            Role::Assistant => {
                let mut a = Message::assistant(&text);
                a.reasoning_content = reasoning;
                if !calls.is_empty() {
                    a.tool_calls = Some(calls);
                }
                out.push(a);
            }
            role => {
                out.extend(results);
                if !text.is_empty() || out.last().is_none_or(|l| l.role != Role::Tool) {
                    let mut u = Message::user(&text);
                    u.role = role;
                    out.push(u);
                }
            }
        }
    }
    let tools_off = r.tool_choice.as_ref().is_some_and(|t| t.kind == "none");
    let mut tools = Vec::new();
    if !tools_off {
        for (i, t) in r.tools.iter().flatten().enumerate() {
            tools.push(check_tool(t.get(), i).map_err(|e| e.for_api(api))?);
        }
    }
    let effort = r
        .output_config
        .as_ref()
        .and_then(|o| o.effort.as_deref())
        .or(r.reasoning_effort.as_deref());
    let thinking = resolve_thinking(effort, r.thinking.as_ref(), None, &model, cfg.ctx)
        .map_err(|e| e.for_api(api))?;
    let has_tools = !tools.is_empty();
    let prompt = render_conversation(app, out, tools, thinking).map_err(|e| e.for_api(api))?;
    let knobs = Knobs {
        temperature: r.temperature,
        top_p: r.top_p,
        top_k: r.top_k,
        ..Knobs::default()
    };
    let common = Common {
        api,
        thinking,
        tools: has_tools,
        sampling: sampling(&knobs, thinking.is_some()),
        max_tokens: r.max_tokens,
        stops: r
            .stop_sequences
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect(),
        stream: r.stream,
        param: "messages",
    };
    Ok(Built {
        req: finish(cfg, app, prompt, common)?,
        model,
        include_usage: true,
        reasoning_summary: false,
    })
}

// ---------------------------------------------------------------- responses

#[derive(Deserialize)]
pub struct Reasoning {
    pub effort: Option<String>,
    pub summary: Option<String>,
}

#[derive(Deserialize)]
pub struct ResponsesRequest {
    pub input: Option<Box<RawValue>>,
    pub instructions: Option<String>,
    pub tools: Option<Vec<Box<RawValue>>>,
    pub tool_choice: Option<Box<RawValue>>,
    pub model: Option<String>,
    pub max_output_tokens: Option<u64>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    #[serde(default)]
    pub stream: bool,
    pub reasoning: Option<Reasoning>,
    pub previous_response_id: Option<String>,
    pub conversation: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    content: Option<Box<RawValue>>,
    name: Option<String>,
    namespace: Option<String>,
    arguments: Option<Box<RawValue>>,
    input: Option<Box<RawValue>>,
    call_id: Option<String>,
    output: Option<Box<RawValue>>,
    status: Option<String>,
    summary: Option<Vec<SummaryPart>>,
}

#[derive(Deserialize)]
struct SummaryPart {
    text: Option<String>,
}

fn responses_content(raw: &RawValue) -> Result<String, ApiError> {
    #[derive(Deserialize)]
    struct Part {
        #[serde(rename = "type")]
        kind: String,
        text: Option<String>,
    }
    let s = raw.get();
    if s.starts_with('"') || s == "null" {
        return text_of(raw, "", "content");
    }
    let parts: Vec<Part> = serde_json::from_str(s)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON request: content: {e}")))?;
    let mut out = String::new();
    for p in parts {
        match p.kind.as_str() {
            "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                out.push_str(p.text.as_deref().unwrap_or(""))
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid JSON request: unsupported content block type {other:?}"
                )));
            }
        }
    }
    Ok(out)
}

fn responses_messages(raw: &RawValue) -> Result<Vec<Message>, ApiError> {
    if raw.get().starts_with('"') {
        let s: String = serde_json::from_str(raw.get()).map_err(|e| json_error(&e))?;
        return Ok(vec![Message::user(&s)]);
    }
    let items: Vec<Item> = serde_json::from_str(raw.get())
        .map_err(|e| ApiError::bad_request(format!("invalid JSON request: input: {e}")))?;
    let mut out: Vec<Message> = Vec::new();
    let mut pending_reasoning: Option<String> = None;
    let mut seen_calls: Vec<String> = Vec::new();
    for (i, it) in items.into_iter().enumerate() {
        if let Some(st) = &it.status
            && st != "completed"
        {
            return Err(ApiError::bad_request(format!(
                "invalid JSON request: input[{i}] has status {st:?}; only completed items can be replayed"
            )));
        }
        match it.kind.as_deref().unwrap_or("message") {
            "message" => {
                let text = match &it.content {
                    Some(c) => responses_content(c)?,
                    None => String::new(),
                };
                let role = match it.role.as_deref().unwrap_or("user") {
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    "system" | "developer" => Role::System,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "input[{i}]: unknown role {other:?}"
                        )));
                    }
                };
                let mut m = Message::user(&text);
                m.role = role;
                if role == Role::Assistant {
                    m.reasoning_content = pending_reasoning.take();
                }
                out.push(m);
            }
            "reasoning" => {
                let mut r = pending_reasoning.take().unwrap_or_default();
                for p in it.summary.iter().flatten() {
                    r.push_str(p.text.as_deref().unwrap_or(""));
                }
                if let Some(c) = &it.content {
                    r.push_str(&responses_content(c)?);
                }
                pending_reasoning = Some(r);
            }
            "function_call" | "custom_tool_call" => {
                let name = format!(
                    "{}{}",
                    it.namespace.as_deref().unwrap_or(""),
                    it.name.as_deref().unwrap_or("")
                );
                let args = it
                    .arguments
                    .or(it.input)
                    .map(|a| {
                        if a.get().starts_with('"') {
                            serde_json::from_str::<String>(a.get()).unwrap_or_default()
                        } else {
                            a.get().to_owned()
                        }
                    })
                    .unwrap_or_default();
                if let Some(id) = &it.call_id {
                    seen_calls.push(id.clone());
                }
                let call = ToolCall::new(it.call_id.as_deref(), &name, &args);
                let merge = out.last().is_some_and(|m| m.role == Role::Assistant)
                    && pending_reasoning.is_none();
                if merge {
                    if let Some(last) = out.last_mut() {
                        last.tool_calls.get_or_insert_default().push(call);
                    }
                } else {
                    let mut a = Message::assistant("");
                    a.reasoning_content = pending_reasoning.take();
                    a.tool_calls = Some(vec![call]);
                    out.push(a);
                }
            }
            "function_call_output" | "custom_tool_call_output" => {
                let id = it.call_id.as_deref().unwrap_or("");
                // There is no server-side conversation state: the call must be in
                // the replayed input.
                if !seen_calls.iter().any(|c| c == id) {
                    return Err(ApiError::bad_request(format!(
                        "Responses continuation state is not available for call_id {id}; retry by replaying the full input history"
                    )));
                }
                let text = match &it.output {
                    Some(o) => responses_content(o)?,
                    None => String::new(),
                };
                out.push(Message::tool(it.call_id.as_deref().unwrap_or(""), &text));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid JSON request: unsupported input item type {other:?}"
                )));
            }
        }
    }
    if let Some(r) = pending_reasoning {
        out.push(Message::assistant("").with_reasoning(&r));
    }
    Ok(out)
}

pub fn responses(cfg: &ServerConfig, app: &AppState, body: &[u8]) -> Result<Built, ApiError> {
    let r: ResponsesRequest = parse(body, Api::Responses)?;
    let model = r
        .model
        .clone()
        .unwrap_or_else(|| crate::MODEL_ID.to_owned());
    if r.previous_response_id.is_some()
        || r.conversation.as_ref().is_some_and(|c| c.get() != "null")
    {
        return Err(ApiError::bad_request(
            "previous_response_id is not supported; replay full input instead",
        ));
    }
    let tools_off = match r.tool_choice.as_ref().map(|t| t.get()) {
        None | Some("\"auto\"") => false,
        Some("\"none\"") => true,
        Some(t) if t.starts_with('"') => {
            return Err(ApiError::bad_request(format!(
                "tool_choice={} not supported",
                t.trim_matches('"')
            )));
        }
        Some(_) => return Err(ApiError::bad_request("forced tool_choice not supported")),
    };
    let Some(input) = r.input else {
        return Err(ApiError::bad_request("missing input"));
    };
    let mut messages = responses_messages(&input)?;
    if let Some(instr) = &r.instructions {
        messages.insert(0, Message::system(instr));
    }
    let mut tools = Vec::new();
    if !tools_off {
        for (i, t) in r.tools.iter().flatten().enumerate() {
            tools.push(check_tool(t.get(), i)?);
        }
    }
    let effort = r.reasoning.as_ref().and_then(|x| x.effort.as_deref());
    let thinking = resolve_thinking(effort, None, None, &model, cfg.ctx)?;
    let summary = r
        .reasoning
        .as_ref()
        .and_then(|x| x.summary.as_deref())
        .is_some_and(|s| matches!(s, "auto" | "concise" | "detailed"));
    let has_tools = !tools.is_empty();
    let prompt = render_conversation(app, messages, tools, thinking)?;
    let knobs = Knobs {
        temperature: r.temperature,
        top_p: r.top_p,
        ..Knobs::default()
    };
    let common = Common {
        api: Api::Responses,
        thinking,
        tools: has_tools,
        sampling: sampling(&knobs, thinking.is_some()),
        max_tokens: r.max_output_tokens.or(r.max_tokens),
        stops: Vec::new(),
        stream: r.stream,
        param: "input",
    };
    Ok(Built {
        req: finish(cfg, app, prompt, common)?,
        model,
        include_usage: true,
        reasoning_summary: summary,
    })
}
