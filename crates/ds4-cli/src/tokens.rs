//! `ds4 --dump-tokens`: tokenize a prompt and print the ids. It needs only the
//! tokenizer, read from the model's GGUF metadata (no weights touched), or the
//! bundled DeepSeek V4 tokenizer when no model file is present.

use std::io::Write;

use anyhow::{Context, Result};
use ds4_chat::{Prompt, ReasoningEffort, Segment, ThinkingMode, encode_single_turn};
use ds4_gguf::GgufFile;
use ds4_tokenizer::{Piece, SpecialMode, Tokenizer};

use crate::args::Args;
use crate::model_path;

/// ds4's default system prompt for CLI generation.
pub const DEFAULT_SYSTEM: &str = "You are a helpful assistant";

pub fn load_tokenizer(args: &Args) -> Result<Tokenizer> {
    match model_path::find(args.model.as_deref())? {
        Some(path) => {
            let f =
                GgufFile::open(&path).with_context(|| format!("cannot read {}", path.display()))?;
            tokenizer_from_file(&f)
                .with_context(|| format!("building the tokenizer of {}", path.display()))
        }
        None => {
            eprintln!(
                "ds4: no model file given and no {} here; using the bundled DeepSeek V4 tokenizer",
                model_path::DEFAULT_MODEL
            );
            Tokenizer::from_json(&crate::tokenizer_meta::bundled_json()?)
                .context("loading the bundled tokenizer")
        }
    }
}

/// The tokenizer from `tokenizer.ggml.*` metadata; weights are not touched.
pub fn tokenizer_from_file(f: &GgufFile) -> Result<Tokenizer> {
    let tokens = f.get_str_array("tokenizer.ggml.tokens")?;
    let merges = f.get_str_array("tokenizer.ggml.merges")?;
    let types = match f.get("tokenizer.ggml.token_type") {
        Some(_) => Some(f.get_i32_array("tokenizer.ggml.token_type")?),
        None => None,
    };
    let tokens: Vec<&str> = tokens.iter().collect();
    let merges: Vec<&str> = merges.iter().collect();
    Ok(Tokenizer::from_gguf_parts(&tokens, &merges, types)?)
}

pub fn prompt_text(args: &Args) -> Result<String> {
    match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read prompt file {}", f.display())),
        (None, None) => anyhow::bail!("--dump-tokens needs -p TEXT or --prompt-file FILE"),
    }
}

pub fn thinking_mode(args: &Args) -> ThinkingMode {
    if args.nothink {
        ThinkingMode::Chat
    } else {
        ThinkingMode::Thinking
    }
}

pub fn dump(args: &Args) -> Result<()> {
    let tok = load_tokenizer(args)?;
    let text = prompt_text(args)?;
    let ids = if args.chat {
        prompt_tokens(&tok, args, &text)?
    } else {
        tok.encode(
            &text,
            if args.raw {
                SpecialMode::Raw
            } else {
                SpecialMode::Recognize
            },
        )
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&ids)?)?;
    for id in &ids {
        let bytes = tok.token_bytes(*id).unwrap_or_default();
        writeln!(out, "{id:6}  {}", String::from_utf8_lossy(bytes))?;
    }
    Ok(())
}

/// Prompt tokens as ds4's CLI builds them: a prompt that already starts with
/// BOS is taken as rendered chat (specials recognised); otherwise
/// `BOS [max prefix] system <｜User｜>prompt<｜Assistant｜><think>|</think>`.
pub fn prompt_tokens(tok: &Tokenizer, args: &Args, text: &str) -> Result<Vec<u32>> {
    let bos_text = tok.token_to_piece(tok.bos()).unwrap_or_default();
    if !bos_text.is_empty() && text.starts_with(bos_text) {
        return Ok(tok.encode(text, SpecialMode::Recognize));
    }
    let system = args.system.as_deref().unwrap_or(DEFAULT_SYSTEM);
    let effort = args.think_max.then_some(ReasoningEffort::Max);
    let prompt = encode_single_turn(Some(system), text, thinking_mode(args), effort);
    encode_prompt(tok, &prompt)
}

/// A rendered prompt as ids: the encoder's control tokens become their ids and
/// everything else is plain text (special-token text typed by a user stays text).
pub fn encode_prompt(tok: &Tokenizer, prompt: &Prompt) -> Result<Vec<u32>> {
    let mut pieces = Vec::new();
    for s in prompt.segments() {
        pieces.push(match s {
            Segment::Special(t) => Piece::Special(
                tok.id_of(t.text())
                    .with_context(|| format!("the vocabulary has no {}", t.text()))?,
            ),
            Segment::Text(t) => Piece::Text(t),
        });
    }
    Ok(tok.encode_pieces(&pieces)?)
}
