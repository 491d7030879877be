//! The full pipeline over real HTTP: real tokenizer, chat encoder and DSML parser,
//! a scripted backend whose one-hot logits force the generated tokens.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ds4_server::{AppState, ScriptControl, ServerConfig};
use ds4_tokenizer::SpecialMode;
use serde_json::{Value, json};

use common::bundled_tokenizer as tokenizer;

struct Server {
    base: String,
    control: Arc<ScriptControl>,
    state: Arc<AppState>,
    http: reqwest::Client,
}

impl Server {
    async fn start(cfg: ServerConfig) -> Self {
        let control = Arc::new(ScriptControl::default());
        let (addr, state) = common::scripted_server(cfg, control.clone()).await;
        let base = format!("http://{addr}");
        Self {
            base,
            control,
            state,
            http: reqwest::Client::new(),
        }
    }

    async fn default() -> Self {
        Self::start(ServerConfig {
            ctx: 4096,
            default_max_tokens: 256,
            ..ServerConfig::default()
        })
        .await
    }

    /// Queue a generation: `text` as the model would sample it (control-token text
    /// becomes its id), then EOS unless `eos` is false.
    fn script(&self, text: &str, eos: bool) -> usize {
        let tok = tokenizer();
        let mut ids = tok.encode(text, SpecialMode::Recognize);
        if eos {
            ids.push(tok.eos());
        }
        let n = ids.len();
        self.control.push_script(ids);
        n
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// POST a streaming request and return its SSE events as (event name, data).
    async fn stream(&self, path: &str, body: Value) -> Vec<(String, String)> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        parse_sse(&r.text().await.expect("body"))
    }
}

fn parse_sse(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = String::new();
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
        if !data.is_empty() {
            out.push((event, data.join("\n")));
        }
    }
    out
}

fn datas(events: &[(String, String)]) -> Vec<Value> {
    events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .map(|(_, d)| serde_json::from_str(d).expect("json event"))
        .collect()
}

const WEATHER_TOOL: &str = r#"{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}}}"#;

const WEATHER_DSML: &str = "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Rome</｜DSML｜parameter>\n<｜DSML｜parameter name=\"days\" string=\"false\">3</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

fn weather_tools() -> Value {
    json!([serde_json::from_str::<Value>(WEATHER_TOOL).expect("tool")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_thinking_non_streaming() {
    let s = Server::default().await;
    let n = s.script("Let me think.</think>Hello world", true);
    let (status, v) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["reasoning_content"], "Let me think.");
    assert_eq!(msg["content"], "Hello world");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["model"], "m");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["usage"]["completion_tokens"], n);
    let p = v["usage"]["prompt_tokens"].as_u64().expect("prompt tokens");
    assert_eq!(v["usage"]["total_tokens"].as_u64(), Some(p + n as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streaming_without_thinking_and_usage() {
    let s = Server::default().await;
    s.script("Hello wörld 😀!", true);
    let ev = s
        .stream(
            "/v1/chat/completions",
            json!({"model": "deepseek-chat", "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(ev.last().map(|e| e.1.as_str()), Some("[DONE]"));
    let d = datas(&ev);
    assert_eq!(d[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello wörld 😀!");
    assert!(
        d.iter()
            .all(|c| c["choices"][0]["delta"].get("reasoning_content").is_none())
    );
    let fin = &d[d.len() - 2];
    assert_eq!(fin["choices"][0]["finish_reason"], "stop");
    let usage = &d[d.len() - 1];
    assert_eq!(usage["choices"], json!([]));
    assert!(
        usage["usage"]["prompt_tokens"]
            .as_u64()
            .is_some_and(|p| p > 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_reasoning_then_content() {
    let s = Server::default().await;
    s.script("Plan: greet.</think>Hi there", true);
    let ev = s
        .stream(
            "/v1/chat/completions",
            json!({"stream": true, "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    let d = datas(&ev);
    let reasoning: String = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    let content: String = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        (reasoning.as_str(), content.as_str()),
        ("Plan: greet.", "Hi there")
    );
    let first_content = d
        .iter()
        .position(|c| c["choices"][0]["delta"]["content"].is_string());
    let last_reasoning = d
        .iter()
        .rposition(|c| c["choices"][0]["delta"]["reasoning_content"].is_string());
    assert!(last_reasoning < first_content);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_tool_call_streams_name_then_arguments() {
    let s = Server::default().await;
    s.script(&format!("Checking.{WEATHER_DSML}"), false);
    let ev = s
        .stream(
            "/v1/chat/completions",
            json!({"stream": true, "model": "deepseek-chat", "tools": weather_tools(),
                   "messages": [{"role": "user", "content": "Weather in Rome?"}]}),
        )
        .await;
    let d = datas(&ev);
    let content: String = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        content, "Checking.",
        "the separator before DSML is syntax, not content"
    );
    let tool_deltas: Vec<&Value> = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert!(
        tool_deltas.len() >= 3,
        "name, then several argument deltas: {tool_deltas:?}"
    );
    assert_eq!(tool_deltas[0]["function"]["name"], "get_weather");
    assert_eq!(tool_deltas[0]["function"]["arguments"], "");
    assert!(
        tool_deltas[0]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_") && id.len() == 37)
    );
    let args: String = tool_deltas
        .iter()
        .filter_map(|t| t["function"]["arguments"].as_str())
        .collect();
    let parsed: Value = serde_json::from_str(&args).expect("arguments JSON");
    assert_eq!(parsed, json!({"city": "Rome", "days": 3}));
    assert!(tool_deltas[1..].iter().all(|t| t.get("id").is_none()));
    assert_eq!(d[d.len() - 1]["choices"][0]["finish_reason"], "tool_calls");
}

/// Runs a tool call, then sends the history back with the call's argument keys
/// reordered; returns (cached tokens of the second request, first prompt + output).
async fn tool_round_trip(exact_replay: bool) -> (u64, u64) {
    let s = Server::start(ServerConfig {
        ctx: 4096,
        exact_replay,
        ..ServerConfig::default()
    })
    .await;
    s.script(WEATHER_DSML, false);
    let first = json!({"model": "deepseek-chat", "tools": weather_tools(),
                       "messages": [{"role": "user", "content": "Weather in Rome?"}]});
    let (status, v) = s.post("/v1/chat/completions", first).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["arguments"], r#"{"city":"Rome","days":3}"#);
    let id = call["id"].as_str().expect("id").to_owned();
    let p1 = v["usage"]["prompt_tokens"].as_u64().expect("p1");
    let c1 = v["usage"]["completion_tokens"].as_u64().expect("c1");

    // Reordered keys: the canonical render differs from what the model wrote.
    s.script("It is sunny.", true);
    let second = json!({"model": "deepseek-chat", "tools": weather_tools(), "messages": [
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": id, "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"days\": 3, \"city\": \"Rome\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "sunny, 25C"}]});
    let (status, v) = s.post("/v1/chat/completions", second).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "It is sunny.");
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached");
    let p2 = v["usage"]["prompt_tokens"].as_u64().expect("p2");
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cache_write_tokens"].as_u64(),
        Some(p2 - cached)
    );
    (cached, p1 + c1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_replay_keeps_the_live_prefix_after_a_tool_call() {
    let (cached, first_turn) = tool_round_trip(true).await;
    assert_eq!(
        cached, first_turn,
        "the whole first turn, tool block included, is reused"
    );
    let (cached, first_turn) = tool_round_trip(false).await;
    assert!(
        cached < first_turn,
        "canonical rendering diverges inside the block: {cached} vs {first_turn}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_request_extending_the_first_reports_cached_tokens_in_every_api() {
    let s = Server::default().await;
    // chat
    let c1 = s.script("Hello world", true) as u64;
    let (_, v) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    let p1 = v["usage"]["prompt_tokens"].as_u64().expect("p1");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    s.script("Fine.", true);
    let (_, v) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "deepseek-chat", "messages": [
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello world"},
            {"role": "user", "content": "How are you?"}]}),
        )
        .await;
    // Everything but the unevaluated EOS is reused.
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(p1 + c1 - 1),
        "{v}"
    );

    // anthropic, extending the chat history above
    s.script("Good.", true);
    let (status, v) = s
        .post("/v1/messages", json!({"model": "deepseek-chat", "max_tokens": 50, "messages": [
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello world"},
            {"role": "user", "content": "How are you?"}, {"role": "assistant", "content": [{"type": "text", "text": "Fine."}]},
            {"role": "user", "content": [{"type": "text", "text": "Sure?"}]}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    let read = v["usage"]["cache_read_input_tokens"]
        .as_u64()
        .expect("read");
    let write = v["usage"]["cache_creation_input_tokens"]
        .as_u64()
        .expect("write");
    assert!(read > p1 + c1, "{v}");
    assert!(write > 0 && write < 20, "{v}");

    // responses
    s.script("Yes.", true);
    let (status, v) = s
        .post("/v1/responses", json!({"model": "deepseek-chat", "input": [
            {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello world"},
            {"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "Fine."},
            {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": [{"type": "output_text", "text": "Good."}]},
            {"role": "user", "content": "Ok"}]}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["output"][0]["content"][0]["text"], "Yes.");
    let cached = v["usage"]["input_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached");
    assert!(cached > read, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sequences_truncate_streamed_and_whole_output() {
    let s = Server::default().await;
    s.script("Hello world, how are you", true);
    let (_, v) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "deepseek-chat", "stop": ["how", "world,"],
               "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hello ");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    s.script("Hello world, how are you", true);
    let ev = s
        .stream(
            "/v1/chat/completions",
            json!({"model": "deepseek-chat", "stream": true, "stop": "are",
               "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    let d = datas(&ev);
    let text: String = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello world, how ");
    // Anthropic stop_sequences.
    s.script("one two three", true);
    let (_, v) = s
        .post(
            "/v1/messages",
            json!({"max_tokens": 20, "thinking": {"type": "disabled"}, "stop_sequences": ["three"],
               "messages": [{"role": "user", "content": "count"}]}),
        )
        .await;
    assert_eq!(v["content"][0]["text"], "one two ");
    assert_eq!(v["stop_reason"], "end_turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_gives_length() {
    let s = Server::default().await;
    s.script("a b c d e f g h", true);
    let (_, v) = s
        .post("/v1/chat/completions", json!({"model": "deepseek-chat", "max_tokens": 3, "messages": [{"role": "user", "content": "Hi"}]}))
        .await;
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["choices"][0]["message"]["content"], "a b c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_return_raw_text() {
    let s = Server::default().await;
    s.script("Think.</think>Answer", true);
    let (status, v) = s.post("/v1/completions", json!({"prompt": "Q?"})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Think.</think>Answer");
    s.script("plain text", true);
    let ev = s
        .stream(
            "/v1/completions",
            json!({"prompt": ["Q?"], "stream": true, "think": false}),
        )
        .await;
    let d = datas(&ev);
    let text: String = d
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "plain text");
    assert_eq!(d[d.len() - 1]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_thinking_and_tool_use() {
    let s = Server::default().await;
    s.script(&format!("Need weather.</think>{WEATHER_DSML}"), false);
    let tools = json!([{"name": "get_weather", "description": "Weather",
                        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let body = json!({"model": "claude", "max_tokens": 100, "tools": tools,
                      "messages": [{"role": "user", "content": "Weather?"}]});
    let (status, v) = s.post("/v1/messages", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "thinking");
    assert_eq!(v["content"][0]["thinking"], "Need weather.");
    assert_eq!(v["content"][1]["type"], "tool_use");
    assert_eq!(v["content"][1]["input"], json!({"city": "Rome", "days": 3}));
    assert!(
        v["content"][1]["id"]
            .as_str()
            .is_some_and(|i| i.starts_with("toolu_"))
    );

    s.script(&format!("Need weather.</think>{WEATHER_DSML}"), false);
    let mut sb = body;
    sb["stream"] = json!(true);
    let ev = s.stream("/v1/messages", sb).await;
    let names: Vec<&str> = ev.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(names[0], "message_start");
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    let d = datas(&ev);
    let starts: Vec<&str> = d
        .iter()
        .filter(|e| e["type"] == "content_block_start")
        .filter_map(|e| e["content_block"]["type"].as_str())
        .collect();
    assert_eq!(starts, ["thinking", "tool_use"]);
    let kinds: Vec<&str> = d
        .iter()
        .filter(|e| e["type"] == "content_block_delta")
        .filter_map(|e| e["delta"]["type"].as_str())
        .collect();
    let sig = kinds
        .iter()
        .position(|k| *k == "signature_delta")
        .expect("signature");
    assert!(kinds[..sig].iter().all(|k| *k == "thinking_delta"));
    assert!(kinds[sig + 1..].iter().all(|k| *k == "input_json_delta") && kinds.len() > sig + 2);
    let partial: String = d
        .iter()
        .filter_map(|e| e["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).expect("json"),
        json!({"city": "Rome", "days": 3})
    );
    let delta = d
        .iter()
        .find(|e| e["type"] == "message_delta")
        .expect("delta");
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_text_reasoning_and_function_call() {
    let s = Server::default().await;
    s.script("Hmm.</think>Hello!", true);
    let (status, v) = s
        .post("/v1/responses", json!({"input": "Hi", "instructions": "Be kind", "reasoning": {"effort": "high", "summary": "auto"}}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["output"][0]["type"], "reasoning");
    assert_eq!(v["output"][0]["summary"][0]["text"], "Hmm.");
    assert_eq!(v["output"][1]["content"][0]["text"], "Hello!");

    s.script(WEATHER_DSML, false);
    let tools =
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]);
    let ev = s
        .stream("/v1/responses", json!({"input": "Weather?", "tools": tools, "stream": true, "reasoning": {"effort": "none"}}))
        .await;
    let d = datas(&ev);
    let types: Vec<&str> = d.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "response.created",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let seq: Vec<u64> = d
        .iter()
        .filter_map(|e| e["sequence_number"].as_u64())
        .collect();
    assert_eq!(seq, (0..6).collect::<Vec<u64>>());
    let done = &d[5]["response"];
    let call = done["output"]
        .as_array()
        .and_then(|o| o.iter().find(|i| i["type"] == "function_call"))
        .expect("call");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["arguments"].as_str().expect("args")).expect("json"),
        json!({"city": "Rome", "days": 3})
    );

    s.script("Hi there friend", true);
    let ev = s.stream("/v1/responses", json!({"input": "Hi", "stream": true, "max_output_tokens": 2, "reasoning": {"effort": "none"}})).await;
    let d = datas(&ev);
    let text: String = d
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(text, "Hi there");
    assert_eq!(d[d.len() - 1]["type"], "response.incomplete");
    assert_eq!(
        d[d.len() - 1]["response"]["incomplete_details"]["reason"],
        "max_tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_guards_everything_but_health() {
    let s = Server::start(ServerConfig {
        ctx: 2048,
        api_key: Some("sekret".into()),
        ..ServerConfig::default()
    })
    .await;
    let get = |path: &str, h: Option<(&str, &str)>| {
        let mut r = s.http.get(format!("{}{path}", s.base));
        if let Some((k, v)) = h {
            r = r.header(k, v);
        }
        r.send()
    };
    assert_eq!(
        get("/health", None).await.expect("h").status().as_u16(),
        200
    );
    let r = get("/v1/models", None).await.expect("m");
    assert_eq!(r.status().as_u16(), 401);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"]["type"], "authentication_error");
    assert_eq!(
        get("/v1/models", Some(("authorization", "Bearer wrong")))
            .await
            .expect("m")
            .status()
            .as_u16(),
        401
    );
    assert_eq!(
        get("/v1/models", Some(("authorization", "Bearer sekret")))
            .await
            .expect("m")
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        get("/v1/models", Some(("x-api-key", "sekret")))
            .await
            .expect("m")
            .status()
            .as_u16(),
        200
    );
    let (status, v) = s.post("/v1/messages", json!({"messages": []})).await;
    assert_eq!(status, 401);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_metrics_and_unknown_routes() {
    let s = Server::default().await;
    let v: Value = s
        .http
        .get(format!("{}/v1/models", s.base))
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("j");
    assert_eq!(v["data"][0]["id"], "deepseek-v4-flash");
    assert_eq!(v["data"][0]["context_length"], 4096);
    let r = s
        .http
        .get(format!("{}/v1/models/deepseek-v4-flash", s.base))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .http
        .get(format!("{}/v1/nope", s.base))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status().as_u16(), 404);
    s.script("Hello", true);
    let (status, _) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 200);
    let m = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .expect("r")
        .text()
        .await
        .expect("t");
    assert!(m.contains("ds4_requests_total{api=\"chat\"} 1"), "{m}");
    assert!(m.contains("ds4_generated_tokens_total 2"), "{m}");
    assert!(m.contains("ds4_queue_depth 0"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_in_the_api_shape() {
    let s = Server::start(ServerConfig {
        ctx: 64,
        ..ServerConfig::default()
    })
    .await;
    let raw = s
        .http
        .post(format!("{}/v1/chat/completions", s.base))
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .expect("r");
    assert_eq!(raw.status().as_u16(), 400);
    let v: Value = raw.json().await.expect("json");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid JSON request")),
        "{v}"
    );

    let cases = [
        (json!({"messages": "hello"}), "invalid JSON request"),
        (json!({"model": "x"}), "missing messages"),
        (
            json!({"messages": [{"role": "narrator", "content": "x"}]}),
            "narrator",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
            "invalid JSON request",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "ultra"}),
            "ultra",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {"description": "no name"}}]}),
            "name",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}),
            "function",
        ),
    ];
    for (body, needle) in cases {
        let (status, v) = s.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(status, 400, "{body} → {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body} → {msg}");
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    let long = "word ".repeat(200);
    let (status, v) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["n_ctx"], 64);
    assert!(
        v["error"]["n_prompt_tokens"]
            .as_u64()
            .is_some_and(|n| n >= 64)
    );
    let (status, v) = s
        .post(
            "/v1/messages",
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": long}]}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["n_ctx"], 64);
    let (status, v) = s.post("/v1/messages", json!({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_use"}]}]})).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["type"], "error");
    let (status, v) = s
        .post(
            "/v1/responses",
            json!({"input": "x", "previous_response_id": "resp_1"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("previous_response_id"))
    );
    let (status, _) = s
        .post("/v1/responses", json!({"input": [{"type": "mystery"}]}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = s
        .post(
            "/v1/responses",
            json!({"input": "x", "tool_choice": "required"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = s.post("/v1/completions", json!({"max_tokens": 3})).await;
    assert_eq!(status, 400);
    // The worker is still healthy.
    s.script("ok", true);
    let (status, v) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(
        (status, v["choices"][0]["message"]["content"].as_str()),
        (200, Some("ok"))
    );
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429() {
    let s = Server::start(ServerConfig {
        ctx: 2048,
        queue_capacity: 1,
        ..ServerConfig::default()
    })
    .await;
    s.control.close_gate();
    let body = json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}]});
    let a = tokio::spawn({
        let (http, url, body) = (
            s.http.clone(),
            format!("{}/v1/chat/completions", s.base),
            body.clone(),
        );
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let control = s.control.clone();
    wait_until(|| control.syncs.load(Ordering::SeqCst) == 1).await;
    let b = tokio::spawn({
        let (http, url, body) = (
            s.http.clone(),
            format!("{}/v1/chat/completions", s.base),
            body.clone(),
        );
        async move {
            http.post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let state = s.state.clone();
    wait_until(|| state.shared.metrics.queue_depth.load(Ordering::SeqCst) == 1).await;
    let (status, v) = s.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    let (status, v) = s
        .post(
            "/v1/messages",
            json!({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(status, 429);
    assert_eq!(v["error"]["type"], "rate_limit_error");
    s.control.open_gate();
    assert_eq!(a.await.expect("join").expect("a"), 200);
    assert_eq!(b.await.expect("join").expect("b"), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_stops_generation() {
    let s = Server::default().await;
    s.control.decode_delay_ms.store(10, Ordering::SeqCst);
    s.script(&"la ".repeat(200), true);
    let mut r = s
        .http
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&json!({"model": "deepseek-chat", "stream": true, "max_tokens": 250, "messages": [{"role": "user", "content": "sing"}]}))
        .send()
        .await
        .expect("send");
    let mut got = 0;
    while got < 300 {
        match r.chunk().await.expect("chunk") {
            Some(c) => got += c.len(),
            None => panic!("stream ended early"),
        }
    }
    drop(r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let d1 = s.control.decodes.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d2 = s.control.decodes.load(Ordering::SeqCst);
    assert_eq!(d1, d2, "generation stopped");
    assert!(d2 < 150, "stopped early: {d2} of 200 tokens decoded");
    // The worker takes the next request.
    s.control.decode_delay_ms.store(0, Ordering::SeqCst);
    s.script("next", true);
    let (status, v) = s
        .post(
            "/v1/chat/completions",
            json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
    assert_eq!(
        (status, v["choices"][0]["message"]["content"].as_str()),
        (200, Some("next"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_comments_flow_during_a_long_prefill() {
    let s = Server::default().await;
    s.control.close_gate();
    s.script("done", true);
    let mut r = s
        .http
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&json!({"model": "deepseek-chat", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.status().as_u16(),
        200,
        "headers go out before prefill ends"
    );
    let first = tokio::time::timeout(Duration::from_secs(8), r.chunk())
        .await
        .expect("a keepalive within 8 s")
        .expect("chunk")
        .expect("data");
    assert_eq!(String::from_utf8_lossy(&first), ": prefill\n\n");
    s.control.open_gate();
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.expect("chunk") {
        rest.extend_from_slice(&c);
    }
    let d = datas(&parse_sse(&String::from_utf8_lossy(&rest)));
    let text: String = d
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_and_cors() {
    let s = Server::start(ServerConfig {
        ctx: 1024,
        cors: true,
        ..ServerConfig::default()
    })
    .await;
    let r = s
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/chat/completions", s.base),
        )
        .header("origin", "http://example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("options");
    assert!(r.status().is_success());
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    let plain = Server::default().await;
    let r = plain
        .http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/messages", plain.base),
        )
        .send()
        .await
        .expect("options");
    assert_eq!(r.status().as_u16(), 204);
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_turn_keeps_hidden_reasoning_in_the_live_session() {
    let s = Server::default().await;
    let c1 = s.script("Some private reasoning.</think>Hello", true) as u64;
    let (_, v) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    let p1 = v["usage"]["prompt_tokens"].as_u64().expect("p1");
    // The renderer drops the old reasoning, so the text no longer matches the live
    // tokens; the visible-transcript binding still reuses all of them.
    s.script("Fine.", true);
    let history = json!({"messages": [{"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "More"}]});
    let (_, v) = s.post("/v1/chat/completions", history.clone()).await;
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(p1 + c1 - 1),
        "{v}"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64() > Some(p1 + c1));
    // A request that does not extend it (here: the same history again) ends the binding.
    s.script("Again.", true);
    let (_, v) = s
        .post(
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Other"}]}),
        )
        .await;
    assert!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64() < Some(p1),
        "{v}"
    );
}
