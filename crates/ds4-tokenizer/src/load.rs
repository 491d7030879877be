//! Building a [`Tokenizer`] from tokenizer.json or from GGUF tokenizer metadata.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use crate::added::{AddedToken, AddedVocab};
use crate::bpe::{Bpe, FastBuild, Merge, PairMap, pair_key};
use crate::bytelevel::{CharToByte, byte_to_char_table};
use crate::{FLAG_ADDED, FLAG_SPECIAL, PieceTable, SpecialIds, Tokenizer, TokenizerError, unicode};

/// Ids in the DeepSeek V4 vocabulary: 128,000 BPE tokens then 1,280 added tokens.
pub const DSV4_VOCAB_SIZE: usize = 129_280;
const DSV4_BASE_SIZE: u32 = 128_000;
/// Added tokens of DeepSeek V4 that HF flags `special` (from the official tokenizer.json).
const DSV4_SPECIAL_RANGES: [(u32, u32); 4] = [
    (0, 2),
    (128_000, 128_799),
    (128_846, 129_263),
    (129_271, 129_279),
];
/// The only non-special added tokens with `normalized: false` (`<｜image2｜>`, table tags).
const DSV4_NOT_NORMALIZED: (u32, u32) = (129_264, 129_270);

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum GgufTokenType {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,
    UserDefined = 4,
    Unused = 5,
    Byte = 6,
}

#[derive(Deserialize)]
struct JsonFile {
    #[serde(default)]
    added_tokens: Vec<JsonAdded>,
    #[serde(default)]
    normalizer: Value,
    #[serde(default)]
    pre_tokenizer: Value,
    #[serde(default)]
    decoder: Value,
    model: JsonModel,
}

#[derive(Deserialize)]
struct JsonAdded {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default = "yes")]
    normalized: bool,
    #[serde(default)]
    special: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct JsonModel {
    #[serde(rename = "type")]
    kind: Option<String>,
    vocab: HashMap<String, u32, FastBuild>,
    merges: Vec<JsonMerge>,
    #[serde(default)]
    dropout: Option<f64>,
    #[serde(default)]
    continuing_subword_prefix: Option<String>,
    #[serde(default)]
    end_of_word_suffix: Option<String>,
    #[serde(default)]
    byte_fallback: bool,
    #[serde(default)]
    ignore_merges: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonMerge {
    Joined(String),
    Pair([String; 2]),
}

fn unsupported(what: impl Into<String>) -> TokenizerError {
    TokenizerError::Unsupported(what.into())
}

/// The pre-tokenizer is hand-written for the V4 rules, so a file with other rules is
/// refused rather than tokenized differently from HF.
fn check_pipeline(file: &JsonFile) -> Result<(), TokenizerError> {
    let model = &file.model;
    if model.kind.as_deref().is_some_and(|k| k != "BPE") {
        return Err(unsupported(format!("model type {:?}", model.kind)));
    }
    if model.dropout.is_some_and(|d| d > 0.0)
        || model.continuing_subword_prefix.is_some()
        || model.end_of_word_suffix.is_some()
        || model.byte_fallback
        || model.ignore_merges
    {
        return Err(unsupported(
            "BPE options (dropout, subword prefix/suffix, byte_fallback, ignore_merges)",
        ));
    }
    let normalizer_ok = match &file.normalizer {
        Value::Null => true,
        v => v["type"] == "Sequence" && v["normalizers"].as_array().is_some_and(|a| a.is_empty()),
    };
    if !normalizer_ok {
        return Err(unsupported(format!("normalizer {}", file.normalizer)));
    }
    if file.decoder["type"] != "ByteLevel" {
        return Err(unsupported(format!("decoder {}", file.decoder)));
    }
    const PATTERNS: [&str; 3] = [
        r"\p{N}{1,3}",
        "[一-龥぀-ゟ゠-ヿ]+",
        concat!(
            r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^"##,
            "\r\n",
            r"\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[",
            "\r\n",
            r"]*|\s*[",
            "\r\n",
            r"]+|\s+(?!\S)|\s+"
        ),
    ];
    let pre = &file.pre_tokenizer;
    let steps = pre["pretokenizers"].as_array();
    let ok = pre["type"] == "Sequence"
        && steps.is_some_and(|steps| {
            steps.len() == 4
                && steps.iter().zip(PATTERNS).all(|(s, p)| {
                    s["type"] == "Split"
                        && s["pattern"]["Regex"] == p
                        && s["behavior"] == "Isolated"
                        && s["invert"] == false
                })
                && steps[3]["type"] == "ByteLevel"
                && steps[3]["add_prefix_space"] == false
                && steps[3]["use_regex"] == false
        });
    if !ok {
        return Err(unsupported(
            "pre_tokenizer differs from DeepSeek V4's (Split ×3 + ByteLevel)",
        ));
    }
    Ok(())
}

impl Tokenizer {
    /// Loads a Hugging Face tokenizer.json with DeepSeek V4's pipeline (the file shipped
    /// with the model). Other pipelines are refused with [`TokenizerError::Unsupported`].
    pub fn from_json(json: &str) -> Result<Self, TokenizerError> {
        let file: JsonFile =
            serde_json::from_str(json).map_err(|e| TokenizerError::Json(e.to_string()))?;
        check_pipeline(&file)?;
        let JsonFile {
            added_tokens,
            model,
            ..
        } = file;
        let n_ids = model
            .vocab
            .values()
            .chain(added_tokens.iter().map(|t| &t.id))
            .max()
            .map_or(0, |&m| m as usize + 1);
        // Ids may have gaps, but a stray huge id must not turn into a huge allocation.
        let entries = model.vocab.len() + added_tokens.len();
        if n_ids > entries.saturating_mul(2).max(1 << 16) {
            return Err(TokenizerError::BadIds(format!(
                "largest id {} for only {entries} tokens",
                n_ids - 1
            )));
        }
        let mut pieces: Vec<Option<&str>> = vec![None; n_ids];
        for (token, &id) in &model.vocab {
            pieces[id as usize] = Some(token.as_str());
        }
        for t in &added_tokens {
            pieces[t.id as usize] = Some(t.content.as_str());
        }
        let pieces = PieceTable::new(pieces.into_iter())?;
        let base = model.vocab;
        let mut added = Vec::with_capacity(added_tokens.len());
        for t in added_tokens {
            added.push(AddedToken {
                id: t.id,
                content: t.content,
                special: t.special,
                normalized: t.normalized,
                lstrip: t.lstrip,
                rstrip: t.rstrip,
                single_word: t.single_word,
            });
        }
        let merges = model.merges.iter().enumerate().map(|(index, m)| match m {
            JsonMerge::Joined(s) => split_merge(index, s),
            JsonMerge::Pair([a, b]) => Ok((a.as_str(), b.as_str())),
        });
        build(pieces, base, merges, added)
    }

    /// [`Tokenizer::from_json`] on raw bytes.
    pub fn from_json_bytes(json: &[u8]) -> Result<Self, TokenizerError> {
        let text = std::str::from_utf8(json).map_err(|e| TokenizerError::Json(e.to_string()))?;
        Self::from_json(text)
    }

    /// Builds the tokenizer from GGUF metadata as ds4's files carry it:
    /// `tokenizer.ggml.tokens` (index = id; BPE tokens in byte-level form, added tokens
    /// literal), `tokenizer.ggml.merges` (`"left right"`, index = rank) and, when present,
    /// `tokenizer.ggml.token_type`.
    ///
    /// Added tokens: with token types, those typed `Control` (HF `special`) or
    /// `UserDefined`. Without them (ds4 itself never reads the key) the vocabulary must
    /// have DeepSeek V4's layout, 129,280 ids with `<｜begin▁of▁sentence｜>` at 0: ids 0–2
    /// and 128000– are the added tokens, with the official flags. The pre-tokenizer is
    /// always V4's: GGUF's `tokenizer.ggml.pre` names it but cannot describe it.
    pub fn from_gguf_parts<T: AsRef<str>, M: AsRef<str>>(
        tokens: &[T],
        merges: &[M],
        token_types: Option<&[i32]>,
    ) -> Result<Self, TokenizerError> {
        let n = tokens.len();
        let mut added = Vec::new();
        let is_added: Vec<bool> = match token_types {
            Some(types) => {
                if types.len() != n {
                    return Err(TokenizerError::TokenTypes(format!(
                        "{} types for {n} tokens",
                        types.len()
                    )));
                }
                types
                    .iter()
                    .enumerate()
                    .map(|(id, &t)| {
                        let control = t == GgufTokenType::Control as i32;
                        let user = t == GgufTokenType::UserDefined as i32;
                        if control || user {
                            added.push(AddedToken {
                                id: id as u32,
                                content: tokens[id].as_ref().to_owned(),
                                special: control,
                                // HF's default for a token added without flags.
                                normalized: !control,
                                lstrip: false,
                                rstrip: false,
                                single_word: false,
                            });
                        }
                        control || user
                    })
                    .collect()
            }
            None => {
                if n != DSV4_VOCAB_SIZE || tokens[0].as_ref() != SpecialIds::BOS {
                    return Err(TokenizerError::TokenTypes(format!(
                        "no tokenizer.ggml.token_type and the vocabulary ({n} tokens) is not \
                         DeepSeek V4's layout, so the added tokens are unknown"
                    )));
                }
                (0..n as u32)
                    .map(|id| {
                        let is = id <= 2 || id >= DSV4_BASE_SIZE;
                        if is {
                            let special = DSV4_SPECIAL_RANGES
                                .iter()
                                .any(|&(a, b)| (a..=b).contains(&id));
                            let (na, nb) = DSV4_NOT_NORMALIZED;
                            added.push(AddedToken {
                                id,
                                content: tokens[id as usize].as_ref().to_owned(),
                                special,
                                normalized: !special && !(na..=nb).contains(&id),
                                lstrip: false,
                                rstrip: false,
                                single_word: false,
                            });
                        }
                        is
                    })
                    .collect()
            }
        };
        let pieces = PieceTable::new(tokens.iter().map(|t| Some(t.as_ref())))?;
        let mut base: HashMap<String, u32, FastBuild> =
            HashMap::with_capacity_and_hasher(n, FastBuild::default());
        for (id, t) in tokens.iter().enumerate() {
            let t = t.as_ref();
            if !is_added[id] {
                base.entry(t.to_owned()).or_insert(id as u32);
            }
        }
        let merges = merges
            .iter()
            .enumerate()
            .map(|(index, m)| split_merge(index, m.as_ref()));
        build(pieces, base, merges, added)
    }
}

fn split_merge(index: usize, merge: &str) -> Result<(&str, &str), TokenizerError> {
    match merge.split_once(' ') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => Ok((a, b)),
        _ => Err(TokenizerError::BadMerge {
            index,
            merge: merge.to_owned(),
            reason: "not two tokens separated by one space",
        }),
    }
}

fn build<'m>(
    pieces: PieceTable,
    base: HashMap<String, u32, FastBuild>,
    merges: impl Iterator<Item = Result<(&'m str, &'m str), TokenizerError>>,
    added: Vec<AddedToken>,
) -> Result<Tokenizer, TokenizerError> {
    let classes = unicode::classes()?;
    let n = pieces.len();
    if n > u32::MAX as usize / 2 {
        return Err(TokenizerError::BadIds(format!("{n} ids")));
    }

    let mut merge_map = PairMap::with_capacity_and_hasher(base.len(), Default::default());
    let mut joined = String::new();
    for (index, m) in merges.enumerate() {
        let (a, b) = m?;
        let bad = |reason| TokenizerError::BadMerge {
            index,
            merge: format!("{a} {b}"),
            reason,
        };
        let left = *base
            .get(a)
            .ok_or_else(|| bad("left token not in vocabulary"))?;
        let right = *base
            .get(b)
            .ok_or_else(|| bad("right token not in vocabulary"))?;
        joined.clear();
        joined.push_str(a);
        joined.push_str(b);
        let new_id = *base
            .get(joined.as_str())
            .ok_or_else(|| bad("merged token not in vocabulary"))?;
        // A repeated pair keeps its last rank, as HF's map built from the list does.
        merge_map.insert(
            pair_key(left, right),
            Merge {
                rank: index as u32,
                new_id,
            },
        );
    }

    let byte_chars = byte_to_char_table();
    let mut byte_ids = [0u32; 256];
    let mut utf8 = [0u8; 4];
    for (b, slot) in byte_ids.iter_mut().enumerate() {
        let s = byte_chars[b].encode_utf8(&mut utf8);
        *slot = *base.get(&*s).ok_or(TokenizerError::MissingByte(b as u8))?;
    }

    let unmap = CharToByte::new();
    let mut bytes = Vec::with_capacity(n * 4);
    let mut byte_spans = Vec::with_capacity(n + 1);
    byte_spans.push(0u32);
    for id in 0..n as u32 {
        if let Some(p) = pieces.get(id) {
            bytes.extend_from_slice(&unmap.token_bytes(p));
        }
        let end = u32::try_from(bytes.len())
            .map_err(|_| TokenizerError::BadIds("decoded vocabulary over 4 GiB".into()))?;
        byte_spans.push(end);
    }

    let mut to_id = base;
    let mut flags = vec![0u8; n];
    for t in &added {
        let slot = flags
            .get_mut(t.id as usize)
            .ok_or_else(|| TokenizerError::BadIds(format!("added token id {}", t.id)))?;
        *slot = FLAG_ADDED | if t.special { FLAG_SPECIAL } else { 0 };
        // Added tokens win a name clash, like HF's `token_to_id`.
        to_id.insert(t.content.clone(), t.id);
    }
    let lookup = |name: &str| {
        to_id
            .get(name)
            .copied()
            .ok_or_else(|| TokenizerError::MissingToken(name.to_owned()))
    };
    let specials = SpecialIds {
        bos: lookup(SpecialIds::BOS)?,
        eos: lookup(SpecialIds::EOS)?,
        user: lookup(SpecialIds::USER)?,
        assistant: lookup(SpecialIds::ASSISTANT)?,
        think_start: lookup(SpecialIds::THINK_START)?,
        think_end: lookup(SpecialIds::THINK_END)?,
        dsml: lookup(SpecialIds::DSML)?,
    };

    let mut added = added;
    added.sort_by_key(|t| t.id);
    Ok(Tokenizer {
        pieces,
        bytes,
        byte_spans,
        to_id,
        flags,
        bpe: Bpe {
            merges: merge_map,
            byte_ids,
        },
        added: AddedVocab::new(added)?,
        classes,
        specials,
    })
}
