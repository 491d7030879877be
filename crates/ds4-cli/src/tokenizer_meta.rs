//! The tokenizer as GGUF metadata (`tokenizer.ggml.*`), built from the bundled
//! Hugging Face tokenizer.json, so files we write carry the real vocabulary the
//! way ds4's published files do.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{Context, Result, bail};
use ds4_gguf::{HeaderBuilder, MetaValue, StringArray};
use serde::Deserialize;

/// The official DeepSeek V4 tokenizer.json, gzip-compressed (MIT, DeepSeek; see NOTICE).
pub const BUNDLED_TOKENIZER_GZ: &[u8] =
    include_bytes!("../../../assets/tokenizer/deepseek-v4-tokenizer.json.gz");

/// llama.cpp's token types.
const TOKEN_NORMAL: i32 = 1;
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

pub struct TokenizerMeta {
    /// Index = id: byte-level BPE strings, added tokens literal.
    pub tokens: Vec<String>,
    /// `"left right"`, index = rank.
    pub merges: Vec<String>,
    pub token_types: Vec<i32>,
}

#[derive(Deserialize)]
struct Json {
    added_tokens: Vec<Added>,
    model: Model,
}

#[derive(Deserialize)]
struct Added {
    id: u32,
    content: String,
    special: bool,
}

#[derive(Deserialize)]
struct Model {
    vocab: HashMap<String, u32>,
    merges: Vec<Merge>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Merge {
    Joined(String),
    Pair([String; 2]),
}

pub fn bundled_json() -> Result<String> {
    let mut s = String::new();
    flate2::read::GzDecoder::new(BUNDLED_TOKENIZER_GZ)
        .read_to_string(&mut s)
        .context("decompressing the bundled tokenizer")?;
    Ok(s)
}

impl TokenizerMeta {
    pub fn bundled() -> Result<TokenizerMeta> {
        TokenizerMeta::from_json(&bundled_json()?)
    }

    pub fn from_json(json: &str) -> Result<TokenizerMeta> {
        let j: Json = serde_json::from_str(json).context("parsing tokenizer.json")?;
        let n = j
            .model
            .vocab
            .values()
            .chain(j.added_tokens.iter().map(|a| &a.id))
            .max()
            .map_or(0, |m| *m as usize + 1);
        let mut tokens = vec![None; n];
        let mut token_types = vec![TOKEN_NORMAL; n];
        for (t, id) in j.model.vocab {
            tokens[id as usize] = Some(t);
        }
        for a in j.added_tokens {
            tokens[a.id as usize] = Some(a.content);
            token_types[a.id as usize] = if a.special {
                TOKEN_CONTROL
            } else {
                TOKEN_USER_DEFINED
            };
        }
        let tokens = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.with_context(|| format!("tokenizer.json has no token with id {i}")))
            .collect::<Result<Vec<_>>>()?;
        let merges = j
            .model
            .merges
            .into_iter()
            .map(|m| match m {
                Merge::Joined(s) => s,
                Merge::Pair([a, b]) => format!("{a} {b}"),
            })
            .collect();
        Ok(TokenizerMeta {
            tokens,
            merges,
            token_types,
        })
    }

    /// Adds the tokenizer keys for a model whose vocabulary has `n_vocab` rows.
    pub fn add_to(&self, h: &mut HeaderBuilder, n_vocab: u32) -> Result<()> {
        if n_vocab as usize != self.tokens.len() {
            bail!(
                "the model's vocabulary ({n_vocab}) differs from the tokenizer's ({} tokens)",
                self.tokens.len()
            );
        }
        let mut tokens = StringArray::with_capacity(
            self.tokens.len(),
            self.tokens.iter().map(|t| t.len()).sum(),
        );
        for t in &self.tokens {
            tokens.push(t);
        }
        let mut merges = StringArray::with_capacity(
            self.merges.len(),
            self.merges.iter().map(|t| t.len()).sum(),
        );
        for m in &self.merges {
            merges.push(m);
        }
        h.add_meta("tokenizer.ggml.model", "gpt2")?;
        h.add_meta("tokenizer.ggml.pre", "joyai-llm")?;
        h.add_meta("tokenizer.ggml.tokens", MetaValue::from(tokens))?;
        h.add_meta("tokenizer.ggml.merges", MetaValue::from(merges))?;
        h.add_meta(
            "tokenizer.ggml.token_type",
            MetaValue::from(self.token_types.clone()),
        )?;
        h.add_meta("tokenizer.ggml.bos_token_id", MetaValue::U32(0))?;
        h.add_meta("tokenizer.ggml.eos_token_id", MetaValue::U32(1))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_tokenizer_has_the_v4_layout() {
        let t = TokenizerMeta::bundled().unwrap();
        assert_eq!(t.tokens.len(), 129_280);
        assert_eq!(t.tokens[0], "<｜begin▁of▁sentence｜>");
        assert_eq!(t.tokens[1], "<｜end▁of▁sentence｜>");
        assert_eq!(t.token_types[0], TOKEN_CONTROL);
        assert_eq!(t.merges[0], "Ġ t");
        assert!(t.token_types[3..128_000].iter().all(|&x| x == TOKEN_NORMAL));
    }
}
