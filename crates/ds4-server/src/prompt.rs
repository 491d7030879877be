//! Prompt segments → token ids, whole or from a byte offset (live reuse).

use ds4_chat::{Prompt, Segment};
use ds4_tokenizer::{Piece, Tokenizer};

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("the tokenizer has no id for control token {0:?}")]
    MissingSpecial(&'static str),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] ds4_tokenizer::TokenizerError),
}

/// Tokenize the part of `prompt` that starts `from` bytes into its rendered text.
/// Encoder-written controls become their ids; client text is BPE'd with no
/// special-token recognition. Returns `Ok(None)` when `from` falls inside a
/// control token or a UTF-8 sequence, where the live tokens cannot be kept.
pub fn tokenize_from(
    tok: &Tokenizer,
    prompt: &Prompt,
    from: usize,
) -> Result<Option<Vec<u32>>, PromptError> {
    let mut pieces: Vec<Piece<'_>> = Vec::new();
    let mut pos = 0usize;
    for seg in prompt.segments() {
        match seg {
            Segment::Special(s) => {
                let text = s.text();
                let end = pos + text.len();
                if pos >= from {
                    let id = tok.id_of(text).ok_or(PromptError::MissingSpecial(text))?;
                    pieces.push(Piece::Special(id));
                } else if end > from {
                    return Ok(None);
                }
                pos = end;
            }
            Segment::Text(t) => {
                let end = pos + t.len();
                if pos >= from {
                    pieces.push(Piece::Text(t));
                } else if end > from {
                    let cut = from - pos;
                    let Some(rest) = t.get(cut..) else {
                        return Ok(None);
                    };
                    pieces.push(Piece::Text(rest));
                }
                pos = end;
            }
        }
    }
    Ok(Some(tok.encode_pieces(&pieces)?))
}

/// Tokenize a whole prompt.
pub fn tokenize(tok: &Tokenizer, prompt: &Prompt) -> Result<Vec<u32>, PromptError> {
    Ok(tokenize_from(tok, prompt, 0)?.unwrap_or_default())
}

/// Replace `marker` inside the text segments with `raw`, whose control-token text
/// (e.g. `｜DSML｜`) becomes control tokens, as the model sampled them.
pub fn splice_raw(prompt: Prompt, marker: &str, raw: &str) -> Prompt {
    let mut out = Prompt::new();
    for seg in prompt.into_segments() {
        match seg {
            Segment::Special(s) => out.push_special(s),
            Segment::Text(t) => match t.split_once(marker) {
                Some((before, after)) => {
                    out.push_text(before);
                    out.push_template(raw);
                    out.push_text(after);
                }
                None => out.push_text(&t),
            },
        }
    }
    out
}
