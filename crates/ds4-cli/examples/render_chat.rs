//! Renders training samples for the demo model with the project's own chat
//! encoder and tokenizer, so the tokens the model is trained on are exactly the
//! ones `ds4` and `ds4-server` feed it.
//!
//! stdin: one JSON object per line, either
//!   `{"text": "..."}`                        raw prose (no BOS), every token scored, or
//!   `{"messages": [...], "thinking": bool}`  a conversation in the server's message
//!                                           shape (tools on the system message).
//! stdout: one `{"ids": [...], "mask": [...]}` per line; `mask[i] = 1` when token `i`
//! is something the model generates (assistant turns after the prompt the server
//! would render for them), else 0.
//!
//! `cargo run --release -p ds4-cli --example render_chat < in.jsonl > out.jsonl`

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use ds4_chat::{EncodeOptions, Message, Role, ThinkingMode, encode_messages};
use ds4_tokenizer::{SpecialMode, Tokenizer};

#[derive(serde::Deserialize)]
struct Sample {
    text: Option<String>,
    messages: Option<Vec<Message>>,
    #[serde(default)]
    thinking: bool,
}

fn render(tok: &Tokenizer, msgs: &[Message], thinking: bool) -> Result<Vec<u32>> {
    let opts = EncodeOptions {
        thinking_mode: if thinking {
            ThinkingMode::Thinking
        } else {
            ThinkingMode::Chat
        },
        ..EncodeOptions::default()
    };
    let p = encode_messages(msgs, &opts)?;
    ds4_cli::tokens::encode_prompt(tok, &p)
}

fn main() -> Result<()> {
    let tok = Tokenizer::from_json(&ds4_cli::tokenizer_meta::bundled_json()?)?;
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (n, line) in stdin.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let s: Sample = serde_json::from_str(&line).with_context(|| format!("line {}", n + 1))?;
        let (ids, mask) = if let Some(t) = s.text {
            let ids = tok.encode(&t, SpecialMode::Raw);
            let mask = vec![1u8; ids.len()];
            (ids, mask)
        } else if let Some(msgs) = s.messages {
            let ids = render(&tok, &msgs, s.thinking)?;
            let mut mask = vec![0u8; ids.len()];
            // Each assistant turn: the tokens past the prompt rendered from the
            // messages before it are what the model must produce.
            for (k, m) in msgs.iter().enumerate() {
                if m.role != Role::Assistant {
                    continue;
                }
                let prefix = render(&tok, &msgs[..k], s.thinking)?;
                let upto = render(&tok, &msgs[..=k], s.thinking)?;
                if !upto.starts_with(&prefix) || !ids.starts_with(&upto) {
                    bail!("line {}: turn {k} does not extend its prompt", n + 1);
                }
                for v in &mut mask[prefix.len()..upto.len()] {
                    *v = 1;
                }
            }
            (ids, mask)
        } else {
            bail!("line {}: neither text nor messages", n + 1);
        };
        serde_json::to_writer(&mut out, &serde_json::json!({"ids": ids, "mask": mask}))?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
