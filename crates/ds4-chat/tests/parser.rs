//! The streaming DSML parser: exact events for the spec's examples, invariance under
//! every split, fallback of malformed and truncated blocks, reasoning isolation,
//! hold-back, greedy-syntax state, and encoder → parser round trips.

use ds4_chat::{
    DsmlParser, EncodeOptions, Event, Message, ParsedToolCall, ParserOptions, ToolCall,
    encode_messages, parse_completion, pyjson,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const TOOLS: ParserOptions = ParserOptions {
    start_in_reasoning: false,
    tools: true,
};
const THINK_TOOLS: ParserOptions = ParserOptions {
    start_in_reasoning: true,
    tools: true,
};

/// Merge consecutive Reasoning / Text / same-call ToolCallArgs events, the only
/// events whose chunking depends on how the input was split.
fn merged(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    for ev in events {
        match (out.last_mut(), ev) {
            (_, Event::Text(s) | Event::Reasoning(s)) if s.is_empty() => {}
            (Some(Event::Text(a)), Event::Text(b)) => a.push_str(&b),
            (Some(Event::Reasoning(a)), Event::Reasoning(b)) => a.push_str(&b),
            (
                Some(Event::ToolCallArgs { index: i, delta: a }),
                Event::ToolCallArgs { index: j, delta: b },
            ) if *i == j => a.push_str(&b),
            (_, ev) => out.push(ev),
        }
    }
    out
}

fn run_pieces(pieces: &[&str], opts: ParserOptions) -> Vec<Event> {
    let mut p = DsmlParser::new(opts);
    let mut ev = Vec::new();
    for piece in pieces {
        ev.extend(p.feed(piece));
    }
    ev.extend(p.finish());
    merged(ev)
}

fn whole(text: &str, opts: ParserOptions) -> Vec<Event> {
    run_pieces(&[text], opts)
}

fn boundaries(text: &str) -> Vec<usize> {
    text.char_indices().map(|(i, _)| i).skip(1).collect()
}

/// Every 2-piece split, every 3-piece split, char by char, byte by byte.
fn assert_split_invariant(text: &str, opts: ParserOptions) {
    let reference = whole(text, opts);
    let cuts = boundaries(text);
    for &a in &cuts {
        assert_eq!(
            run_pieces(&[&text[..a], &text[a..]], opts),
            reference,
            "split at {a} of {text:?}"
        );
    }
    // Three pieces: every pair of boundaries.
    for (x, &a) in cuts.iter().enumerate() {
        for &b in &cuts[x + 1..] {
            assert_eq!(
                run_pieces(&[&text[..a], &text[a..b], &text[b..]], opts),
                reference,
                "split at {a},{b} of {text:?}"
            );
        }
    }
    let chars: Vec<String> = text.chars().map(String::from).collect();
    let refs: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(run_pieces(&refs, opts), reference, "char by char: {text:?}");
    // Byte by byte through the UTF-8 assembler.
    let mut p = DsmlParser::new(opts);
    let mut ev = Vec::new();
    for b in text.as_bytes() {
        ev.extend(p.feed_bytes(std::slice::from_ref(b)));
    }
    ev.extend(p.finish());
    assert_eq!(merged(ev), reference, "byte by byte: {text:?}");
}

fn call(name: &str, args_json: &str) -> ParsedToolCall {
    let arguments: Map<String, Value> = serde_json::from_str(args_json).expect("test json");
    ParsedToolCall {
        name: name.into(),
        arguments,
        arguments_json: args_json.into(),
    }
}

fn text(s: &str) -> Event {
    Event::Text(s.into())
}

fn reasoning(s: &str) -> Event {
    Event::Reasoning(s.into())
}

fn start(index: usize, name: &str) -> Event {
    Event::ToolCallStart {
        index,
        name: name.into(),
    }
}

fn args(index: usize, delta: &str) -> Event {
    Event::ToolCallArgs {
        index,
        delta: delta.into(),
    }
}

fn end(index: usize, name: &str, args_json: &str) -> Event {
    Event::ToolCallEnd {
        index,
        call: call(name, args_json),
    }
}

/// The official grammar example (spec §5.5), two invokes, string and JSON params.
const SPEC_EXAMPLE: &str = "Checking.\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"NAME\">\n<｜DSML｜parameter name=\"KEY\" string=\"true\">RAW STRING</｜DSML｜parameter>\n<｜DSML｜parameter name=\"KEY2\" string=\"false\">{\"a\": [1, 2.5, \"x\"]}</｜DSML｜parameter>\n</｜DSML｜invoke>\n<｜DSML｜invoke name=\"NAME2\">\n\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

/// Golden test 1's first assistant turn (thinking mode).
const GOLDEN1_TURN: &str = "The user wants to know the weather in Beijing. I should use the get_weather tool.</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"location\" string=\"true\">Beijing</｜DSML｜parameter>\n<｜DSML｜parameter name=\"unit\" string=\"true\">celsius</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

/// Golden test 3's tool-call turn (thinking mode, CJK payload).
const GOLDEN3_TURN: &str = "用户想知道小柴胡冲剂和布洛芬能否一起服用。</think>\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"search\">\n<｜DSML｜parameter name=\"queries\" string=\"true\">小柴胡冲剂 布洛芬 相互作用 一起吃</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";

#[test]
fn spec_example_events() {
    let ev = whole(SPEC_EXAMPLE, TOOLS);
    let a0 = r#"{"KEY": "RAW STRING", "KEY2": {"a": [1, 2.5, "x"]}}"#;
    assert_eq!(
        ev,
        vec![
            text("Checking."),
            start(0, "NAME"),
            args(0, a0),
            end(0, "NAME", a0),
            start(1, "NAME2"),
            args(1, "{}"),
            end(1, "NAME2", "{}"),
            Event::ToolCallsDone,
            Event::End,
        ]
    );
    assert_split_invariant(SPEC_EXAMPLE, TOOLS);
}

#[test]
fn golden_turn_events() {
    let a = r#"{"location": "Beijing", "unit": "celsius"}"#;
    assert_eq!(
        whole(GOLDEN1_TURN, THINK_TOOLS),
        vec![
            reasoning(
                "The user wants to know the weather in Beijing. I should use the get_weather tool."
            ),
            start(0, "get_weather"),
            args(0, a),
            end(0, "get_weather", a),
            Event::ToolCallsDone,
            Event::End,
        ]
    );
    assert_split_invariant(GOLDEN1_TURN, THINK_TOOLS);
    let a = r#"{"queries": "小柴胡冲剂 布洛芬 相互作用 一起吃"}"#;
    assert_eq!(
        whole(GOLDEN3_TURN, THINK_TOOLS),
        vec![
            reasoning("用户想知道小柴胡冲剂和布洛芬能否一起服用。"),
            start(0, "search"),
            args(0, a),
            end(0, "search", a),
            Event::ToolCallsDone,
            Event::End,
        ]
    );
    assert_split_invariant(GOLDEN3_TURN, THINK_TOOLS);
}

#[test]
fn string_payload_is_escaped_like_python_and_streams() {
    let t = "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"w\">\n<｜DSML｜parameter name=\"p\" string=\"true\">a \"q\" \\ \n\t</div> &lt; é</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let a = "{\"p\": \"a \\\"q\\\" \\\\ \\n\\t</div> &lt; é\"}";
    assert_eq!(
        whole(t, TOOLS),
        vec![
            start(0, "w"),
            args(0, a),
            end(0, "w", a),
            Event::ToolCallsDone,
            Event::End
        ]
    );
    assert_split_invariant(t, TOOLS);
    // The payload streams: a prefix ending inside the value already yields deltas
    // (all but a possible closing-tag prefix).
    let mut p = DsmlParser::new(TOOLS);
    let cut = t.find("</div>").expect("marker") + 2;
    let ev = p.feed(&t[..cut]);
    assert_eq!(
        merged(ev),
        vec![start(0, "w"), args(0, "{\"p\": \"a \\\"q\\\" \\\\ \\n\\t")]
    );
    assert!(p.in_argument_payload());
}

#[test]
fn tolerated_variants() {
    // ds4's short and plain dialects, a missing `string` attribute, loose whitespace.
    let short = "<DSML｜tool_calls><DSML｜invoke  name=\"f\" ><DSML｜parameter name=\"x\">1</DSML｜parameter></DSML｜invoke></DSML｜tool_calls>";
    let plain = "x\n\n<tool_calls>\n  <invoke name=\"f\">\n    <parameter name=\"x\" string=\"false\">1</parameter>\n  </invoke>\n</tool_calls>";
    assert_eq!(
        whole(short, TOOLS),
        vec![
            start(0, "f"),
            args(0, r#"{"x": "1"}"#),
            end(0, "f", r#"{"x": "1"}"#),
            Event::ToolCallsDone,
            Event::End
        ]
    );
    assert_eq!(
        whole(plain, TOOLS),
        vec![
            text("x"),
            start(0, "f"),
            args(0, r#"{"x": 1}"#),
            end(0, "f", r#"{"x": 1}"#),
            Event::ToolCallsDone,
            Event::End
        ]
    );
    assert_split_invariant(short, TOOLS);
    assert_split_invariant(plain, TOOLS);
}

#[test]
fn invalid_json_parameter_becomes_a_string() {
    let t = "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"n\" string=\"false\">{oops</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let a = r#"{"n": "{oops"}"#;
    assert_eq!(
        whole(t, TOOLS),
        vec![
            start(0, "f"),
            args(0, a),
            end(0, "f", a),
            Event::ToolCallsDone,
            Event::End
        ]
    );
}

#[test]
fn dsml_inside_think_is_reasoning() {
    let t = "plan: <｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n</｜DSML｜invoke>\n</｜DSML｜tool_calls></think>done";
    let ev = whole(t, THINK_TOOLS);
    assert_eq!(
        ev,
        vec![
            reasoning(&t[..t.find("</think>").expect("end")]),
            text("done"),
            Event::End
        ]
    );
    assert_split_invariant(t, THINK_TOOLS);
    // A <think> opened in text mode isolates its content the same way.
    let t = "a<think>x<｜DSML｜tool_calls></think>b";
    assert_eq!(
        whole(t, TOOLS),
        vec![
            text("a"),
            reasoning("x<｜DSML｜tool_calls>"),
            text("b"),
            Event::End
        ]
    );
    assert_split_invariant(t, TOOLS);
}

#[test]
fn without_tools_dsml_is_text() {
    let opts = ParserOptions {
        start_in_reasoning: false,
        tools: false,
    };
    assert_eq!(
        whole(SPEC_EXAMPLE, opts),
        vec![text(SPEC_EXAMPLE), Event::End]
    );
    assert_split_invariant(SPEC_EXAMPLE, opts);
}

/// Malformed blocks: no call started → the block's raw text is plain text and
/// parsing resumes at the offending character; a started call → ToolCallsAborted.
#[test]
fn malformed_blocks_fall_back_to_text() {
    let cases: &[(&str, Vec<Event>)] = &[
        // Garbage between the opening tag and the first invoke.
        (
            "hi\n\n<｜DSML｜tool_calls>\nHello",
            vec![text("hi\n\n<｜DSML｜tool_calls>\nHello"), Event::End],
        ),
        // Bad parameter tag (unknown attribute) after a started invoke.
        (
            "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" kind=\"1\">v</｜DSML｜parameter>",
            vec![
                start(0, "f"),
                Event::ToolCallsAborted {
                    raw: "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n".into(),
                    first_index: 0,
                },
                text("<｜DSML｜parameter name=\"x\" kind=\"1\">v</｜DSML｜parameter>"),
                Event::End,
            ],
        ),
        // Unclosed invoke: text ends inside the block.
        (
            "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" string=\"true\">v</｜DSML｜parameter>\n",
            vec![
                start(0, "f"),
                args(0, r#"{"x": "v""#),
                Event::ToolCallsAborted {
                    raw: "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"x\" string=\"true\">v</｜DSML｜parameter>\n".into(),
                    first_index: 0,
                },
                Event::End,
            ],
        ),
        // Closing parameter tag not closed by `>`.
        (
            "<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"x\">v</｜DSML｜parameter x",
            vec![
                start(0, "f"),
                args(0, r#"{"x": "v"#),
                Event::ToolCallsAborted {
                    raw: "<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"x\">v".into(),
                    first_index: 0,
                },
                text("</｜DSML｜parameter x"),
                Event::End,
            ],
        ),
        // Duplicate parameter names (rejected by the official decoder).
        (
            "<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"x\">1</｜DSML｜parameter><｜DSML｜parameter name=\"x\">2</｜DSML｜parameter></｜DSML｜invoke></｜DSML｜tool_calls>",
            vec![
                start(0, "f"),
                args(0, r#"{"x": "1""#),
                Event::ToolCallsAborted {
                    raw: "<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\"><｜DSML｜parameter name=\"x\">1</｜DSML｜parameter>".into(),
                    first_index: 0,
                },
                text("<｜DSML｜parameter name=\"x\">2</｜DSML｜parameter></｜DSML｜invoke></｜DSML｜tool_calls>"),
                Event::End,
            ],
        ),
        // Garbage between parameters of a started invoke.
        (
            "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\nsure! <｜DSML｜parameter name=\"x\">1</｜DSML｜parameter>",
            vec![
                start(0, "f"),
                Event::ToolCallsAborted {
                    raw: "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n".into(),
                    first_index: 0,
                },
                text("sure! <｜DSML｜parameter name=\"x\">1</｜DSML｜parameter>"),
                Event::End,
            ],
        ),
        // An invoke name that never closes its quote on the line.
        (
            "<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\nx",
            vec![
                text("<｜DSML｜tool_calls><｜DSML｜invoke name=\"f\nx"),
                Event::End,
            ],
        ),
        // Mixed dialects inside one block; then a good block is still recognised.
        (
            "<｜DSML｜tool_calls><invoke name=\"f\"></invoke></｜DSML｜tool_calls><tool_calls><invoke name=\"g\"></invoke></tool_calls>",
            vec![
                text("<｜DSML｜tool_calls><invoke name=\"f\"></invoke></｜DSML｜tool_calls>"),
                start(0, "g"),
                args(0, "{}"),
                end(0, "g", "{}"),
                Event::ToolCallsDone,
                Event::End,
            ],
        ),
    ];
    for (input, want) in cases {
        assert_eq!(&whole(input, TOOLS), want, "{input:?}");
        assert_split_invariant(input, TOOLS);
    }
}

/// Truncation at every position: the non-streaming result is the prefix itself as
/// content (no calls) until the block is complete, and the reasoning never leaks.
#[test]
fn truncated_at_every_position() {
    let full = GOLDEN1_TURN;
    let think_end = full.find("</think>").expect("end") + "</think>".len();
    for (cut, _) in full.char_indices().skip(1) {
        let prefix = &full[..cut];
        let r = parse_completion(prefix, THINK_TOOLS);
        if cut < think_end {
            // Inside the reasoning (a partial `</think>` is flushed as reasoning).
            assert_eq!(r.reasoning, prefix);
            assert_eq!(r.content, "");
        } else {
            assert_eq!(r.reasoning, &full[..think_end - "</think>".len()]);
            assert_eq!(r.content, &full[think_end..cut], "cut {cut}");
            assert!(r.tool_calls.is_empty());
            assert!(!r.tool_calls_done);
        }
        assert_aborted_iff_started(prefix, THINK_TOOLS);
    }
    let r = parse_completion(full, THINK_TOOLS);
    assert_eq!(r.tool_calls.len(), 1);
    assert!(r.tool_calls_done);
    assert_eq!(r.content, "");

    // Text mode, two invokes: until the closing tag, everything is content.
    for (cut, _) in SPEC_EXAMPLE.char_indices().skip(1) {
        let prefix = &SPEC_EXAMPLE[..cut];
        let r = parse_completion(prefix, TOOLS);
        assert_eq!(r.content, prefix, "cut {cut}");
        assert!(r.tool_calls.is_empty());
        assert_aborted_iff_started(prefix, TOOLS);
    }
    let r = parse_completion(SPEC_EXAMPLE, TOOLS);
    assert_eq!((r.content.as_str(), r.tool_calls.len()), ("Checking.", 2));
}

/// Streaming: a started call is always answered by ToolCallsAborted when the block
/// does not complete.
fn assert_aborted_iff_started(prefix: &str, opts: ParserOptions) {
    let ev = whole(prefix, opts);
    let started = ev.iter().any(|e| matches!(e, Event::ToolCallStart { .. }));
    let aborted = ev
        .iter()
        .any(|e| matches!(e, Event::ToolCallsAborted { .. }));
    assert_eq!(started, aborted, "{prefix:?}: {ev:?}");
}

#[test]
fn hold_back_is_minimal() {
    let mut p = DsmlParser::new(TOOLS);
    assert_eq!(p.feed("Hello <"), vec![text("Hello ")]);
    assert_eq!(p.feed("b>"), vec![text("<b>")]);
    assert_eq!(p.feed("x\n"), vec![text("x")]);
    assert_eq!(p.feed("\n"), vec![]);
    assert!(!p.in_syntax());
    assert_eq!(p.feed("\n"), vec![text("\n")]);
    assert_eq!(p.feed("<｜DSML｜tool_"), vec![]);
    assert!(p.in_syntax());
    assert!(!p.in_argument_payload());
    assert_eq!(p.feed("x"), vec![text("\n\n<｜DSML｜tool_x")]);
    // `<think>` prefixes wait; other tags pass.
    assert_eq!(p.feed("<thi"), vec![]);
    assert_eq!(p.feed("s"), vec![text("<this")]);
    // In reasoning only `</think>` is held.
    let mut p = DsmlParser::new(THINK_TOOLS);
    assert_eq!(p.feed("a\n\n<｜DSML｜"), vec![reasoning("a\n\n<｜DSML｜")]);
    assert_eq!(p.feed("</th"), vec![]);
    assert_eq!(p.feed("ink>\n\nok"), vec![text("\n\nok")]);
}

#[test]
fn greedy_syntax_state_follows_the_structure() {
    let t = "<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"f\">\n<｜DSML｜parameter name=\"s\" string=\"true\">ab</｜DSML｜parameter>\n<｜DSML｜parameter name=\"j\" string=\"false\">{\"k\": \"v\"}</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls>";
    let mut p = DsmlParser::new(TOOLS);
    let mut states = String::new();
    for c in t.chars() {
        p.feed(&c.to_string());
        states.push(match (p.in_syntax(), p.in_argument_payload()) {
            (true, false) => 's',
            (false, true) => 'p',
            (false, false) => '-',
            (true, true) => '!',
        });
    }
    assert!(!states.contains('!'));
    // The state after each char: payload exactly inside `ab` and inside the JSON
    // string value "v" (after its opening quote, up to its closing quote); the key
    // "k" is structure.
    let payload: Vec<usize> = states
        .char_indices()
        .filter(|(_, s)| *s == 'p')
        .map(|(i, _)| i)
        .collect();
    let chars: Vec<char> = t.chars().collect();
    let at = |needle: &str| {
        let byte = t.find(needle).expect("needle");
        t[..byte].chars().count()
    };
    let s_open = at("true\">ab") + "true\">".chars().count() - 1;
    let v_open = at("\"v\"}");
    // '>', 'a', 'b', then '<' and '/' of the closing tag: two characters are not
    // yet a commitment to the tag.
    let mut want: Vec<usize> = (s_open..s_open + 5).collect();
    want.extend(v_open..v_open + 2); // opening quote, 'v'
    assert_eq!(
        payload,
        want,
        "{states}\n{}",
        chars.iter().collect::<String>()
    );
    // Tool names and attributes are syntax; text before the block is not.
    assert!(states.ends_with('-')); // after the closing tag: back to text
    let mut p = DsmlParser::new(TOOLS);
    p.feed("plain text");
    assert!(!p.in_syntax() && !p.in_argument_payload());
}

#[test]
fn utf8_bytes_are_reassembled() {
    let t =
        "é😀<｜DSML｜tool_calls><｜DSML｜invoke name=\"名\"></｜DSML｜invoke></｜DSML｜tool_calls>";
    let mut p = DsmlParser::new(TOOLS);
    let mut ev = Vec::new();
    for b in t.as_bytes() {
        ev.extend(p.feed_bytes(&[*b]));
    }
    ev.extend(p.finish());
    assert_eq!(merged(ev), whole(t, TOOLS));
    // Invalid bytes become U+FFFD, a dangling partial sequence is flushed as one.
    let mut p = DsmlParser::new(TOOLS);
    let mut ev = p.feed_bytes(b"a\xffb\xe2\x82");
    ev.extend(p.finish());
    assert_eq!(merged(ev), vec![text("a\u{FFFD}b\u{FFFD}"), Event::End]);
}

/// Encoder → parser: the rendered assistant turn parses back to the same calls, and
/// the arguments text is the official decoder's form (Python JSON of the values).
fn round_trip(calls: &[(&str, &str)], content: &str, reasoning_text: &str) {
    let tool_calls: Vec<ToolCall> = calls
        .iter()
        .map(|(n, a)| ToolCall::new(None, n, a))
        .collect();
    let mut msg = Message::assistant(content).with_reasoning(reasoning_text);
    msg.tool_calls = Some(tool_calls);
    msg.wo_eos = true;
    let opts = EncodeOptions {
        drop_thinking: false,
        add_bos: false,
        ..EncodeOptions::thinking()
    };
    let rendered = encode_messages(&[Message::user("Q"), msg], &opts)
        .expect("encodes")
        .render_to_string();
    let generated = rendered
        .split_once("<｜Assistant｜><think>")
        .expect("assistant turn")
        .1;
    let r = parse_completion(generated, THINK_TOOLS);
    assert_eq!(r.reasoning, reasoning_text);
    assert_eq!(r.content, content);
    assert!(r.tool_calls_done);
    assert_eq!(r.tool_calls.len(), calls.len());
    for ((name, a), got) in calls.iter().zip(&r.tool_calls) {
        assert_eq!(&got.name, name);
        // The parsed call, put back in the history, renders the same DSML.
        let again = ds4_chat::render_tool_calls(&[got.to_tool_call(None)]).render_to_string();
        let original =
            ds4_chat::render_tool_calls(&[ToolCall::new(None, name, a)]).render_to_string();
        assert_eq!(again, original);
        let want: Map<String, Value> = serde_json::from_str(a).expect("object");
        assert_eq!(got.arguments, want);
        let canonical = pyjson::dumps(&pyjson::loads(a).expect("json"));
        assert_eq!(got.arguments_json, canonical);
    }
}

#[test]
fn round_trip_examples() {
    round_trip(
        &[
            (
                "get_weather",
                r#"{"location": "Beijing", "unit": "celsius"}"#,
            ),
            (
                "write",
                r#"{"path":"a.rs","body":"fn main() {\n    println!(\"<hi>\");\n}\n","n":-1.5e-9,"o":{"x":[1,null,true]}}"#,
            ),
            ("noop", "{}"),
        ],
        "",
        "think",
    );
    round_trip(&[("f", r#"{"q": "小柴胡 😀 \u0007"}"#)], "Let me look.", "");
}

fn arb_json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-z<>\"\\\\ \n]{0,8}".prop_map(Value::String),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Text with no marker in it comes out unchanged, however it is split.
    #[test]
    fn marker_free_text_passes_through(
        s in "[a-z <>/｜DSMLthinkol_\n\"=é😀]{0,60}",
        cuts in proptest::collection::vec(0usize..64, 0..4),
    ) {
        let markers = ["<think>", "<｜DSML｜tool_calls>", "<DSML｜tool_calls>", "<tool_calls>"];
        prop_assume!(!markers.iter().any(|m| s.contains(m)));
        let mut idx: Vec<usize> = cuts
            .into_iter()
            .map(|c| c.min(s.len()))
            .filter(|c| s.is_char_boundary(*c))
            .collect();
        idx.sort_unstable();
        let mut pieces = Vec::new();
        let mut last = 0;
        for c in idx {
            pieces.push(&s[last..c]);
            last = c;
        }
        pieces.push(&s[last..]);
        let ev = run_pieces(&pieces, TOOLS);
        let mut want = Vec::new();
        if !s.is_empty() {
            want.push(Event::Text(s.clone()));
        }
        want.push(Event::End);
        prop_assert_eq!(ev, want);
        // In reasoning, only `</think>` matters.
        prop_assume!(!s.contains("</think>"));
        let ev = run_pieces(&pieces, THINK_TOOLS);
        let mut want = Vec::new();
        if !s.is_empty() {
            want.push(Event::Reasoning(s.clone()));
        }
        want.push(Event::End);
        prop_assert_eq!(ev, want);
    }

    /// Random arguments survive render → parse (string values never contain the
    /// closing parameter tag: the official format cannot carry it).
    #[test]
    fn random_calls_round_trip(
        name in "[a-zA-Z_][a-zA-Z0-9_.-]{0,12}",
        members in proptest::collection::vec(("[a-z_]{1,6}", arb_json_leaf()), 0..5),
        nested in proptest::collection::vec(arb_json_leaf(), 0..3),
    ) {
        let mut obj = Map::new();
        for (k, v) in members {
            obj.insert(k, v);
        }
        obj.insert("list".into(), Value::Array(nested));
        let a = serde_json::to_string(&Value::Object(obj)).expect("ser");
        round_trip(&[(name.as_str(), a.as_str())], "", "r");
    }
}
