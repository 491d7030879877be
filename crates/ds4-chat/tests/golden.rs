//! The four official golden tests of `encoding_dsv4.py`, byte for byte, plus the
//! parse checks the official test script makes on the same prompts.

use ds4_chat::{
    EncodeOptions, Message, ParserOptions, Prompt, Segment, SpecialToken, Tool, encode_messages,
    parse_completion,
};
use serde::Deserialize;
use std::path::PathBuf;

fn golden(name: &str) -> String {
    let p: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "../../tests/data/dsv4-encoding-golden",
        name,
    ]
    .iter()
    .collect();
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn messages(name: &str) -> Vec<Message> {
    serde_json::from_str(&golden(name)).expect("golden input parses")
}

/// Checks the string and that the segments are exactly the golden text cut at every
/// special-token occurrence (the golden contents hold no special-token text, so the
/// official tokenization and ours agree).
fn check(prompt: &Prompt, expected: &str) {
    let got = prompt.render_to_string();
    if got != expected {
        let at = got
            .char_indices()
            .zip(expected.chars())
            .find(|((_, a), b)| a != b)
            .map_or(got.len().min(expected.len()), |((i, _), _)| i);
        panic!(
            "mismatch at byte {at}\n--- got ---\n{}\n--- expected ---\n{}",
            &got[at.saturating_sub(80)..(at + 80).min(got.len())],
            &expected[at.saturating_sub(80)..(at + 80).min(expected.len())]
        );
    }
    let mut reference = Prompt::new();
    reference.push_template(expected);
    assert_eq!(prompt.segments(), reference.segments());
}

#[test]
fn golden_1_thinking_with_tools() {
    #[derive(Deserialize)]
    struct Case {
        tools: Vec<Tool>,
        messages: Vec<Message>,
    }
    let mut case: Case = serde_json::from_str(&golden("test_input_1.json")).expect("parses");
    case.messages[0].tools = Some(case.tools);
    let prompt = encode_messages(&case.messages, &EncodeOptions::thinking()).expect("encodes");
    let expected = golden("test_output_1.txt");
    check(&prompt, &expected);

    // The official script parses the first assistant turn back.
    let marker = "<｜Assistant｜><think>";
    let start = expected.find(marker).expect("marker") + marker.len();
    let end = start + expected[start..].find("<｜User｜>").expect("next user");
    let turn = expected[start..end]
        .strip_suffix("<｜end▁of▁sentence｜>")
        .expect("eos");
    let opts = ParserOptions {
        start_in_reasoning: true,
        tools: true,
    };
    let parsed = parse_completion(turn, opts);
    assert_eq!(
        parsed.reasoning,
        "The user wants to know the weather in Beijing. I should use the get_weather tool."
    );
    assert_eq!(parsed.content, "");
    assert!(parsed.tool_calls_done);
    assert_eq!(parsed.tool_calls.len(), 1);
    assert_eq!(parsed.tool_calls[0].name, "get_weather");
    assert_eq!(
        parsed.tool_calls[0].arguments_json,
        r#"{"location": "Beijing", "unit": "celsius"}"#
    );

    let last = expected.rfind(marker).expect("marker") + marker.len();
    let turn = expected[last..]
        .strip_suffix("<｜end▁of▁sentence｜>")
        .expect("eos");
    let parsed = parse_completion(turn, opts);
    assert_eq!(
        parsed.reasoning,
        "Got the weather data. Let me format a nice response."
    );
    assert!(parsed.content.contains("22°C"));
    assert!(parsed.tool_calls.is_empty());
}

#[test]
fn golden_2_thinking_drops_old_reasoning() {
    let msgs = messages("test_input_2.json");
    let prompt = encode_messages(&msgs, &EncodeOptions::thinking()).expect("encodes");
    let expected = golden("test_output_2.txt");
    check(&prompt, &expected);
    assert!(!expected.contains("The user said hello"));
    // Ends with the last assistant's EOS, no transition after an assistant turn.
    assert_eq!(
        prompt.segments().last(),
        Some(&Segment::Special(SpecialToken::Eos))
    );
}

#[test]
fn golden_3_search_agent_developer_and_latest_reminder() {
    let msgs = messages("test_input_3.json");
    let prompt = encode_messages(&msgs, &EncodeOptions::thinking()).expect("encodes");
    check(&prompt, &golden("test_output_3.txt"));
}

#[test]
fn golden_4_chat_mode_action_task() {
    let msgs = messages("test_input_4.json");
    let prompt = encode_messages(&msgs, &EncodeOptions::chat()).expect("encodes");
    check(&prompt, &golden("test_output_4.txt"));
}
