//! Worker events → each API's response body and SSE stream.

use axum::response::sse::Event;
use serde_json::{Value, json};

use crate::worker::{Finish, Usage, WorkerEvent};

/// A finished tool call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Call {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub complete: bool,
}

/// Everything a request produced, accumulated from its events.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub started: bool,
    pub raw: String,
    pub reasoning: String,
    pub content: String,
    pub calls: Vec<Call>,
    pub finish: Option<Finish>,
    pub usage: Usage,
    pub ended_in_reasoning: bool,
}

impl Collected {
    pub fn apply(&mut self, ev: &WorkerEvent) {
        match ev {
            WorkerEvent::Prefill { .. } => {}
            WorkerEvent::Started(u) => {
                self.started = true;
                self.usage = *u;
            }
            WorkerEvent::Raw(s) => self.raw.push_str(s),
            WorkerEvent::Reasoning(s) => self.reasoning.push_str(s),
            WorkerEvent::Text(s) => self.content.push_str(s),
            WorkerEvent::ToolStart { index, id, name } => self.calls.push(Call {
                index: *index,
                id: id.clone(),
                name: name.clone(),
                ..Call::default()
            }),
            WorkerEvent::ToolArgs { .. } => {}
            WorkerEvent::ToolEnd {
                index,
                arguments_json,
                ..
            } => {
                if let Some(c) = self.calls.iter_mut().find(|c| c.index == *index) {
                    c.arguments = compact_json(arguments_json);
                    c.complete = true;
                }
            }
            WorkerEvent::ToolsAborted { raw, first_index } => {
                self.calls.retain(|c| c.index < *first_index);
                self.content.push_str(raw);
            }
            WorkerEvent::Done {
                finish,
                usage,
                ended_in_reasoning,
            } => {
                self.finish = Some(finish.clone());
                if self.started {
                    self.usage = *usage;
                }
                self.ended_in_reasoning = *ended_in_reasoning;
            }
        }
    }

    /// Non-streaming bodies: a thinking answer cut before `</think>` is returned
    /// as content (ds4's rule), and half-parsed calls are dropped.
    pub fn finalize_for_body(&mut self) {
        if self.ended_in_reasoning && self.content.is_empty() && self.calls.is_empty() {
            self.content = std::mem::take(&mut self.reasoning);
        }
        self.calls.retain(|c| c.complete);
    }

    pub fn finish(&self) -> &Finish {
        self.finish.as_ref().unwrap_or(&Finish::Length)
    }

    /// A failure before generation started (prefill or setup).
    pub fn early_error(&self) -> Option<&str> {
        match &self.finish {
            Some(Finish::Error(m)) if !self.started => Some(m),
            _ => None,
        }
    }
}

/// Arguments as compact JSON text (OpenAI's `arguments` string); text that is not
/// JSON is passed through.
fn compact_json(s: &str) -> String {
    serde_json::from_str::<Box<serde_json::value::RawValue>>(s)
        .ok()
        .and_then(|_| serde_json::from_str::<Value>(s).ok())
        .map_or_else(|| s.to_owned(), |v| v.to_string())
}

pub fn openai_finish(f: &Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::Cancelled => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::Error(_) => "error",
    }
}

fn anthropic_stop(f: &Finish) -> &'static str {
    match f {
        Finish::ToolCalls => "tool_use",
        Finish::Length => "max_tokens",
        _ => "end_turn",
    }
}

pub fn chat_usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.written()},
    })
}

fn anthropic_usage(u: &Usage, output_tokens: usize) -> Value {
    json!({
        "input_tokens": u.prompt_tokens - u.cached_tokens.min(u.prompt_tokens) - u.written(),
        "output_tokens": output_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.written(),
    })
}

fn responses_usage(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": u.written()},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

fn openai_tool_calls(calls: &[Call]) -> Value {
    calls
        .iter()
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
        .collect()
}

pub struct Meta {
    pub id: String,
    pub model: String,
    pub created: u64,
}

pub fn chat_body(c: &Collected, m: &Meta) -> Value {
    let mut msg = json!({"role": "assistant", "content": c.content});
    if !c.reasoning.is_empty() {
        msg["reasoning_content"] = c.reasoning.clone().into();
    }
    if !c.calls.is_empty() {
        msg["tool_calls"] = openai_tool_calls(&c.calls);
    }
    json!({
        "id": m.id, "object": "chat.completion", "created": m.created, "model": m.model,
        "choices": [{"index": 0, "message": msg, "finish_reason": openai_finish(c.finish())}],
        "usage": chat_usage(&c.usage),
    })
}

pub fn completion_body(c: &Collected, m: &Meta) -> Value {
    json!({
        "id": m.id, "object": "text_completion", "created": m.created, "model": m.model,
        "choices": [{"text": c.raw, "index": 0, "finish_reason": openai_finish(c.finish())}],
        "usage": chat_usage(&c.usage),
    })
}

fn anthropic_input(args: &str) -> Value {
    serde_json::from_str::<Value>(args)
        .ok()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

pub fn anthropic_body(c: &Collected, m: &Meta) -> Value {
    let mut content = Vec::new();
    if !c.reasoning.is_empty() {
        content.push(json!({"type": "thinking", "thinking": c.reasoning, "signature": m.id}));
    }
    if !c.content.is_empty() {
        content.push(json!({"type": "text", "text": c.content}));
    }
    for call in &c.calls {
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": anthropic_input(&call.arguments)}));
    }
    if c.content.is_empty() && c.calls.is_empty() {
        content.push(json!({"type": "text", "text": ""}));
    }
    json!({
        "id": m.id, "type": "message", "role": "assistant", "model": m.model, "content": content,
        "stop_reason": anthropic_stop(c.finish()), "stop_sequence": null,
        "usage": anthropic_usage(&c.usage, c.usage.completion_tokens),
    })
}

fn hex24() -> String {
    format!("{:024x}", rand::random::<u128>() >> 32)
}

/// Item ids of one Responses answer, fixed before streaming starts.
pub struct ResponsesIds {
    pub reasoning: String,
    pub message: String,
}

impl ResponsesIds {
    pub fn new() -> Self {
        Self {
            reasoning: format!("rs_{}", hex24()),
            message: format!("msg_{}", hex24()),
        }
    }
}

impl Default for ResponsesIds {
    fn default() -> Self {
        Self::new()
    }
}

fn responses_status(f: &Finish) -> &'static str {
    match f {
        Finish::Length => "incomplete",
        Finish::Error(_) => "failed",
        _ => "completed",
    }
}

fn reasoning_item(c: &Collected, ids: &ResponsesIds, done: bool) -> Value {
    let status = if !done {
        "in_progress"
    } else if c.ended_in_reasoning {
        "incomplete"
    } else {
        "completed"
    };
    json!({"id": ids.reasoning, "type": "reasoning", "status": status,
           "summary": if done { json!([{"type": "summary_text", "text": c.reasoning}]) } else { json!([]) }})
}

fn message_item(c: &Collected, ids: &ResponsesIds, done: bool) -> Value {
    let status = match (done, c.finish()) {
        (false, _) => "in_progress",
        (true, Finish::Length | Finish::Error(_)) => "incomplete",
        _ => "completed",
    };
    let content = if done {
        json!([{"type": "output_text", "text": c.content, "annotations": []}])
    } else {
        json!([])
    };
    json!({"id": ids.message, "type": "message", "status": status, "role": "assistant", "content": content})
}

fn call_item(call: &Call, done: bool) -> Value {
    let hex = call.id.trim_start_matches("call_");
    json!({"id": format!("fc_{}", hex.get(..24).unwrap_or(hex)),
           "type": "function_call", "status": if done { "completed" } else { "in_progress" },
           "name": call.name, "call_id": call.id, "arguments": if done { call.arguments.as_str() } else { "" }})
}

fn responses_output(c: &Collected, ids: &ResponsesIds, summary: bool) -> Vec<Value> {
    let mut out = Vec::new();
    if summary && !c.reasoning.is_empty() {
        out.push(reasoning_item(c, ids, true));
    }
    if !c.content.is_empty() || c.calls.is_empty() {
        out.push(message_item(c, ids, true));
    }
    out.extend(c.calls.iter().map(|call| call_item(call, true)));
    out
}

pub fn responses_body(c: &Collected, m: &Meta, ids: &ResponsesIds, summary: bool) -> Value {
    let mut v = json!({
        "id": m.id, "object": "response", "created_at": m.created, "status": responses_status(c.finish()),
        "model": m.model, "output": responses_output(c, ids, summary), "usage": responses_usage(&c.usage),
    });
    match c.finish() {
        Finish::Length => v["incomplete_details"] = json!({"reason": "max_tokens"}),
        Finish::Error(_) => {
            v["error"] = json!({"code": "server_error", "message": "generation failed"})
        }
        _ => {}
    }
    v
}

fn data(v: Value) -> Event {
    Event::default().data(v.to_string())
}

fn named(name: &str, v: Value) -> Event {
    Event::default().event(name).data(v.to_string())
}

/// An SSE error event after the headers went out.
pub fn sse_error(anthropic: bool, message: &str) -> Event {
    if anthropic {
        named(
            "error",
            json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        )
    } else {
        named(
            "error",
            json!({"error": {"message": message, "type": "server_error"}}),
        )
    }
}

/// One API's stream: worker events in, SSE events out.
pub trait StreamFormat: Send + 'static {
    fn on(&mut self, ev: &WorkerEvent, out: &mut Vec<Event>);
}

pub struct ChatStream {
    pub meta: Meta,
    pub include_usage: bool,
    pub completions: bool,
    c: Collected,
}

impl ChatStream {
    pub fn new(meta: Meta, include_usage: bool, completions: bool) -> Self {
        Self {
            meta,
            include_usage,
            completions,
            c: Collected::default(),
        }
    }

    fn chunk(&self, delta: Value, finish: Value) -> Event {
        let m = &self.meta;
        if self.completions {
            data(
                json!({"id": m.id, "object": "text_completion", "created": m.created, "model": m.model,
                        "choices": [{"text": delta, "index": 0, "finish_reason": finish}]}),
            )
        } else {
            data(
                json!({"id": m.id, "object": "chat.completion.chunk", "created": m.created, "model": m.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
            )
        }
    }
}

impl StreamFormat for ChatStream {
    fn on(&mut self, ev: &WorkerEvent, out: &mut Vec<Event>) {
        self.c.apply(ev);
        if self.completions {
            match ev {
                WorkerEvent::Raw(s) => out.push(self.chunk(json!(s), Value::Null)),
                WorkerEvent::Done { .. } => self.finish(out),
                _ => {}
            }
            return;
        }
        match ev {
            WorkerEvent::Started(_) => {
                out.push(self.chunk(json!({"role": "assistant"}), Value::Null))
            }
            WorkerEvent::Reasoning(s) => {
                out.push(self.chunk(json!({"reasoning_content": s}), Value::Null))
            }
            WorkerEvent::Text(s) => out.push(self.chunk(json!({"content": s}), Value::Null)),
            WorkerEvent::ToolsAborted { raw, .. } => {
                out.push(self.chunk(json!({"content": raw}), Value::Null))
            }
            WorkerEvent::ToolStart { index, id, name } => out.push(self.chunk(
                json!({"tool_calls": [{"index": index, "id": id, "type": "function",
                                        "function": {"name": name, "arguments": ""}}]}),
                Value::Null,
            )),
            WorkerEvent::ToolArgs { index, delta } => out.push(self.chunk(
                json!({"tool_calls": [{"index": index, "function": {"arguments": delta}}]}),
                Value::Null,
            )),
            WorkerEvent::Done { .. } => self.finish(out),
            _ => {}
        }
    }
}

impl ChatStream {
    fn finish(&mut self, out: &mut Vec<Event>) {
        if let Some(msg) = self.c.early_error() {
            out.push(sse_error(false, msg));
            return;
        }
        let f = openai_finish(self.c.finish());
        let empty = if self.completions {
            json!("")
        } else {
            json!({})
        };
        out.push(self.chunk(empty, json!(f)));
        if self.include_usage {
            let m = &self.meta;
            let object = if self.completions {
                "text_completion"
            } else {
                "chat.completion.chunk"
            };
            out.push(data(
                json!({"id": m.id, "object": object, "created": m.created, "model": m.model,
                                 "choices": [], "usage": chat_usage(&self.c.usage)}),
            ));
        }
        out.push(Event::default().data("[DONE]"));
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Open {
    None,
    Thinking,
    Text,
    Tool,
}

pub struct AnthropicStream {
    meta: Meta,
    c: Collected,
    open: Open,
    next_index: usize,
    had_text_or_tool: bool,
}

impl AnthropicStream {
    pub fn new(meta: Meta) -> Self {
        Self {
            meta,
            c: Collected::default(),
            open: Open::None,
            next_index: 0,
            had_text_or_tool: false,
        }
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if self.open == Open::None {
            return;
        }
        let index = self.next_index - 1;
        if self.open == Open::Thinking {
            out.push(named(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "signature_delta", "signature": self.meta.id}}),
            ));
        }
        out.push(named(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        self.open = Open::None;
    }

    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<Event>) -> usize {
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = kind;
        out.push(named(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }

    fn delta(&self, delta: Value, out: &mut Vec<Event>) {
        out.push(named(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next_index - 1, "delta": delta}),
        ));
    }
}

impl StreamFormat for AnthropicStream {
    fn on(&mut self, ev: &WorkerEvent, out: &mut Vec<Event>) {
        self.c.apply(ev);
        match ev {
            WorkerEvent::Started(u) => out.push(named("message_start", json!({"type": "message_start",
                "message": {"id": self.meta.id, "type": "message", "role": "assistant", "model": self.meta.model,
                            "content": [], "stop_reason": null, "stop_sequence": null, "usage": anthropic_usage(u, 0)}}))),
            WorkerEvent::Reasoning(s) => {
                if self.open != Open::Thinking {
                    self.open(Open::Thinking, json!({"type": "thinking", "thinking": "", "signature": ""}), out);
                }
                self.delta(json!({"type": "thinking_delta", "thinking": s}), out);
            }
            WorkerEvent::Text(s) | WorkerEvent::ToolsAborted { raw: s, .. } => {
                if self.open != Open::Text {
                    self.open(Open::Text, json!({"type": "text", "text": ""}), out);
                }
                self.had_text_or_tool = true;
                self.delta(json!({"type": "text_delta", "text": s}), out);
            }
            WorkerEvent::ToolStart { id, name, .. } => {
                self.had_text_or_tool = true;
                self.open(Open::Tool, json!({"type": "tool_use", "id": id, "name": name, "input": {}}), out);
            }
            WorkerEvent::ToolArgs { delta, .. } if self.open == Open::Tool => {
                self.delta(json!({"type": "input_json_delta", "partial_json": delta}), out);
            }
            WorkerEvent::ToolEnd { .. } => self.close(out),
            WorkerEvent::Done { finish, usage, .. } => {
                if let Some(msg) = self.c.early_error() {
                    out.push(sse_error(true, msg));
                    return;
                }
                self.close(out);
                if !self.had_text_or_tool {
                    self.open(Open::Text, json!({"type": "text", "text": ""}), out);
                    self.close(out);
                }
                out.push(named("message_delta", json!({"type": "message_delta",
                    "delta": {"stop_reason": anthropic_stop(finish), "stop_sequence": null},
                    "usage": {"output_tokens": usage.completion_tokens}})));
                out.push(named("message_stop", json!({"type": "message_stop"})));
            }
            _ => {}
        }
    }
}

pub struct ResponsesStream {
    meta: Meta,
    ids: ResponsesIds,
    summary: bool,
    c: Collected,
    seq: u64,
    reasoning_open: bool,
    message_open: bool,
    next_output: usize,
    reasoning_index: usize,
    message_index: usize,
}

impl ResponsesStream {
    pub fn new(meta: Meta, ids: ResponsesIds, summary: bool) -> Self {
        Self {
            meta,
            ids,
            summary,
            c: Collected::default(),
            seq: 0,
            reasoning_open: false,
            message_open: false,
            next_output: 0,
            reasoning_index: 0,
            message_index: 0,
        }
    }

    fn emit(&mut self, kind: &str, mut v: Value, out: &mut Vec<Event>) {
        v["type"] = kind.into();
        v["sequence_number"] = self.seq.into();
        self.seq += 1;
        out.push(named(kind, v));
    }

    fn response(&self, status: &str, with_output: bool) -> Value {
        let m = &self.meta;
        let mut r = json!({"id": m.id, "object": "response", "created_at": m.created, "status": status,
                           "model": m.model, "output": []});
        if with_output {
            r = responses_body(&self.c, m, &self.ids, self.summary);
        }
        r
    }
}

impl StreamFormat for ResponsesStream {
    fn on(&mut self, ev: &WorkerEvent, out: &mut Vec<Event>) {
        self.c.apply(ev);
        match ev {
            WorkerEvent::Started(_) => {
                let r = self.response("in_progress", false);
                self.emit("response.created", json!({"response": r}), out);
            }
            WorkerEvent::Reasoning(s) if self.summary => {
                if !self.reasoning_open {
                    self.reasoning_open = true;
                    self.reasoning_index = self.next_output;
                    self.next_output += 1;
                    let item = reasoning_item(&self.c, &self.ids, false);
                    let oi = self.reasoning_index;
                    self.emit(
                        "response.output_item.added",
                        json!({"output_index": oi, "item": item}),
                        out,
                    );
                    let id = self.ids.reasoning.clone();
                    self.emit(
                        "response.reasoning_summary_part.added",
                        json!({"item_id": id, "output_index": oi,
                        "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
                        out,
                    );
                }
                let (id, oi) = (self.ids.reasoning.clone(), self.reasoning_index);
                self.emit(
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": oi,
                    "summary_index": 0, "delta": s}),
                    out,
                );
            }
            WorkerEvent::Text(s) | WorkerEvent::ToolsAborted { raw: s, .. } => {
                if !self.message_open {
                    self.message_open = true;
                    self.message_index = self.next_output;
                    self.next_output += 1;
                    let item = message_item(&self.c, &self.ids, false);
                    let oi = self.message_index;
                    self.emit(
                        "response.output_item.added",
                        json!({"output_index": oi, "item": item}),
                        out,
                    );
                    let id = self.ids.message.clone();
                    self.emit(
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": oi, "content_index": 0,
                        "part": {"type": "output_text", "text": "", "annotations": []}}),
                        out,
                    );
                }
                let (id, oi) = (self.ids.message.clone(), self.message_index);
                self.emit(
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": oi, "content_index": 0, "delta": s}),
                    out,
                );
            }
            WorkerEvent::Done { .. } => {
                if let Some(msg) = self.c.early_error() {
                    out.push(sse_error(false, msg));
                    return;
                }
                self.c.finalize_for_body();
                if self.reasoning_open {
                    let (id, oi) = (self.ids.reasoning.clone(), self.reasoning_index);
                    let text = self.c.reasoning.clone();
                    self.emit("response.reasoning_summary_text.done", json!({"item_id": id, "output_index": oi, "summary_index": 0, "text": text}), out);
                    self.emit(
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": oi, "summary_index": 0,
                        "part": {"type": "summary_text", "text": text}}),
                        out,
                    );
                    let item = reasoning_item(&self.c, &self.ids, true);
                    self.emit(
                        "response.output_item.done",
                        json!({"output_index": oi, "item": item}),
                        out,
                    );
                }
                if self.message_open {
                    let (id, oi) = (self.ids.message.clone(), self.message_index);
                    let text = self.c.content.clone();
                    self.emit("response.output_text.done", json!({"item_id": id, "output_index": oi, "content_index": 0, "text": text}), out);
                    self.emit(
                        "response.content_part.done",
                        json!({"item_id": id, "output_index": oi, "content_index": 0,
                        "part": {"type": "output_text", "text": text, "annotations": []}}),
                        out,
                    );
                    let item = message_item(&self.c, &self.ids, true);
                    self.emit(
                        "response.output_item.done",
                        json!({"output_index": oi, "item": item}),
                        out,
                    );
                }
                for call in self.c.calls.clone() {
                    let oi = self.next_output;
                    self.next_output += 1;
                    let added = call_item(&call, false);
                    let item_id = added["id"].clone();
                    self.emit(
                        "response.output_item.added",
                        json!({"output_index": oi, "item": added}),
                        out,
                    );
                    self.emit(
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": oi, "delta": call.arguments}),
                        out,
                    );
                    self.emit(
                        "response.function_call_arguments.done",
                        json!({"item_id": item_id, "output_index": oi,
                        "name": call.name, "arguments": call.arguments}),
                        out,
                    );
                    self.emit(
                        "response.output_item.done",
                        json!({"output_index": oi, "item": call_item(&call, true)}),
                        out,
                    );
                }
                let status = responses_status(self.c.finish());
                let kind = match status {
                    "incomplete" => "response.incomplete",
                    "failed" => "response.failed",
                    _ => "response.completed",
                };
                let r = self.response(status, true);
                self.emit(kind, json!({"response": r}), out);
            }
            _ => {}
        }
    }
}
