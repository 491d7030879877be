//! DeepSeek V4 tokenizer: byte-level BPE that produces the same ids as Hugging Face
//! `tokenizers` on the official `tokenizer.json`.
//!
//! Pipeline (HF's, step for step): added tokens are cut out of the raw text first
//! ([`SpecialMode::Recognize`]); every remaining gap is pre-tokenized by the V4 split
//! rules (`pretok.rs`, written against Unicode classes rather than a regex engine), each
//! piece is mapped to the GPT-2 byte alphabet and merged by rank (`bpe.rs`). Decoding maps
//! tokens back to bytes and replaces invalid UTF-8 with U+FFFD; [`StreamDecoder`] does the
//! same incrementally without ever emitting half a character.
//!
//! Two sources: [`Tokenizer::from_json`] (tokenizer.json) and
//! [`Tokenizer::from_gguf_parts`] (`tokenizer.ggml.tokens` / `merges` / `token_type`).

mod added;
mod bpe;
mod bytelevel;
mod load;
mod pretok;
mod stream;
mod unicode;

use std::collections::HashMap;

pub use added::AddedToken;
pub use load::{DSV4_VOCAB_SIZE, GgufTokenType};
pub use stream::StreamDecoder;

use added::{AddedVocab, Segment};
use bpe::{Bpe, Scratch};
use pretok::CharInfo;
use unicode::Classes;

/// Errors from loading a vocabulary or from ids outside it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer.json is not valid: {0}")]
    Json(String),
    #[error("unsupported tokenizer: {0}")]
    Unsupported(String),
    #[error("merge #{index} {merge:?}: {reason}")]
    BadMerge {
        index: usize,
        merge: String,
        reason: &'static str,
    },
    #[error("token id {0} is not in the vocabulary")]
    UnknownId(u32),
    #[error("token {0:?}, which DeepSeek V4 needs, is missing from the vocabulary")]
    MissingToken(String),
    #[error("the byte-level vocabulary has no token for byte 0x{0:02x}")]
    MissingByte(u8),
    #[error("token ids: {0}")]
    BadIds(String),
    #[error("token types: {0}")]
    TokenTypes(String),
    #[error("added tokens: {0}")]
    AddedTokens(String),
    #[error("Unicode tables: {0}")]
    UnicodeTables(String),
}

/// How added-token text inside a string is treated by [`Tokenizer::encode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SpecialMode {
    /// Hugging Face's behaviour (`encode(text, add_special_tokens=False)`): every added
    /// token, special-flagged or not, becomes its id wherever its text occurs. This is
    /// what the official chat encoding expects for a whole rendered prompt.
    #[default]
    Recognize,
    /// No added token is recognized: `<｜User｜>` typed by a user is BPE'd as plain text.
    /// Use this for untrusted content (user messages, tool results).
    Raw,
}

/// One part of a prompt for [`Tokenizer::encode_pieces`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A token id emitted as is (e.g. [`SpecialIds::user`]).
    Special(u32),
    /// Untrusted text: added-token strings in it stay plain text ([`SpecialMode::Raw`]).
    Text(&'a str),
    /// Trusted template text: added tokens in it are recognized ([`SpecialMode::Recognize`]).
    Rendered(&'a str),
}

/// The ids ds4 looks up by string at load time (it refuses a vocabulary missing any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<｜begin▁of▁sentence｜>`
    pub bos: u32,
    /// `<｜end▁of▁sentence｜>`
    pub eos: u32,
    /// `<｜User｜>`
    pub user: u32,
    /// `<｜Assistant｜>`
    pub assistant: u32,
    /// `<think>`
    pub think_start: u32,
    /// `</think>`
    pub think_end: u32,
    /// `｜DSML｜` (DSML tags are `<` + this token + `tool_calls>` etc.)
    pub dsml: u32,
}

impl SpecialIds {
    pub const BOS: &'static str = "<｜begin▁of▁sentence｜>";
    pub const EOS: &'static str = "<｜end▁of▁sentence｜>";
    pub const USER: &'static str = "<｜User｜>";
    pub const ASSISTANT: &'static str = "<｜Assistant｜>";
    pub const THINK_START: &'static str = "<think>";
    pub const THINK_END: &'static str = "</think>";
    pub const DSML: &'static str = "｜DSML｜";
}

/// A loaded vocabulary. Immutable and `Sync`: share one behind an `Arc`.
pub struct Tokenizer {
    /// id → token string as the vocabulary writes it (byte-level form for BPE tokens,
    /// literal UTF-8 for added tokens); `None` for ids the vocabulary skips.
    pieces: PieceTable,
    /// Decoded bytes of every id, concatenated; `byte_spans[id]..byte_spans[id + 1]`.
    bytes: Vec<u8>,
    byte_spans: Vec<u32>,
    to_id: HashMap<String, u32, bpe::FastBuild>,
    /// Per id: [`FLAG_ADDED`] | [`FLAG_SPECIAL`].
    flags: Vec<u8>,
    bpe: Bpe,
    added: AddedVocab,
    classes: &'static Classes,
    specials: SpecialIds,
}

const FLAG_ADDED: u8 = 1;
const FLAG_SPECIAL: u8 = 2;

/// Every token string in one allocation (129k small allocations cost more than the rest
/// of loading); `None` marks ids the vocabulary skips.
struct PieceTable {
    text: String,
    spans: Vec<(u32, u32)>,
}

const ABSENT: (u32, u32) = (u32::MAX, u32::MAX);

impl PieceTable {
    fn new<'a>(
        pieces: impl ExactSizeIterator<Item = Option<&'a str>>,
    ) -> Result<Self, TokenizerError> {
        let mut table = PieceTable {
            text: String::new(),
            spans: Vec::with_capacity(pieces.len()),
        };
        for p in pieces {
            let span = match p {
                Some(p) => {
                    let start = table.text.len();
                    table.text.push_str(p);
                    let too_big = || TokenizerError::BadIds("vocabulary text over 4 GiB".into());
                    (
                        u32::try_from(start).map_err(|_| too_big())?,
                        u32::try_from(table.text.len()).map_err(|_| too_big())?,
                    )
                }
                None => ABSENT,
            };
            table.spans.push(span);
        }
        Ok(table)
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    fn get(&self, id: u32) -> Option<&str> {
        let &(a, b) = self.spans.get(id as usize)?;
        if (a, b) == ABSENT {
            return None;
        }
        self.text.get(a as usize..b as usize)
    }
}

#[derive(Default)]
struct EncodeBuffers {
    chars: Vec<CharInfo>,
    scratch: Scratch,
}

impl Tokenizer {
    /// Ids of all tokens: base vocabulary plus added tokens (129,280 for V4).
    pub fn vocab_size(&self) -> usize {
        self.flags.len()
    }

    pub fn specials(&self) -> SpecialIds {
        self.specials
    }

    pub fn bos(&self) -> u32 {
        self.specials.bos
    }

    pub fn eos(&self) -> u32 {
        self.specials.eos
    }

    /// The id of a token given as the vocabulary writes it (HF `token_to_id`): added
    /// tokens by their text (`"<think>"`), BPE tokens in byte-level form (`"Ġthe"`).
    pub fn id_of(&self, token: &str) -> Option<u32> {
        self.to_id.get(token).copied()
    }

    /// The vocabulary's string for an id (HF `id_to_token`), e.g. `"Ġthe"`.
    pub fn token_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id)
    }

    /// The bytes an id decodes to (may be part of a UTF-8 character).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        self.pieces.get(id)?;
        let (a, b) = (self.byte_spans[i] as usize, self.byte_spans[i + 1] as usize);
        Some(&self.bytes[a..b])
    }

    /// Whether an id is an added token (matched in text by [`SpecialMode::Recognize`]).
    pub fn is_added(&self, id: u32) -> bool {
        self.flags
            .get(id as usize)
            .is_some_and(|f| f & FLAG_ADDED != 0)
    }

    /// HF's `special` flag of an added token (what `skip_special_tokens` drops).
    pub fn is_special(&self, id: u32) -> bool {
        self.flags
            .get(id as usize)
            .is_some_and(|f| f & FLAG_SPECIAL != 0)
    }

    /// The added tokens with their flags, in vocabulary order.
    pub fn added_tokens(&self) -> &[AddedToken] {
        &self.added.tokens
    }

    /// Token ids of `text`. Never fails: every byte has a token.
    pub fn encode(&self, text: &str, mode: SpecialMode) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, mode, &mut out);
        out
    }

    /// [`Tokenizer::encode`], appending to `out`.
    pub fn encode_into(&self, text: &str, mode: SpecialMode, out: &mut Vec<u32>) {
        let mut buf = EncodeBuffers::default();
        self.encode_with(text, mode, &mut buf, out);
    }

    /// Encodes a prompt assembled from trusted ids, template text and untrusted content,
    /// each part on its own: pre-tokenization and merges never cross a part boundary.
    /// HF likewise handles the text between two added tokens on its own, so the result
    /// equals `encode(concatenation, Recognize)` whenever text parts are separated by
    /// [`Piece::Special`] ids (and the `Text` parts contain no added-token strings, which
    /// is the point: there they stay plain text). Fails only on an unknown special id.
    pub fn encode_pieces(&self, pieces: &[Piece<'_>]) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::new();
        let mut buf = EncodeBuffers::default();
        for piece in pieces {
            match *piece {
                Piece::Special(id) => {
                    if self.token_to_piece(id).is_none() {
                        return Err(TokenizerError::UnknownId(id));
                    }
                    out.push(id);
                }
                Piece::Text(text) => self.encode_with(text, SpecialMode::Raw, &mut buf, &mut out),
                Piece::Rendered(text) => {
                    self.encode_with(text, SpecialMode::Recognize, &mut buf, &mut out)
                }
            }
        }
        Ok(out)
    }

    fn encode_with(
        &self,
        text: &str,
        mode: SpecialMode,
        buf: &mut EncodeBuffers,
        out: &mut Vec<u32>,
    ) {
        match mode {
            SpecialMode::Raw => self.encode_plain(text, buf, out),
            SpecialMode::Recognize => self.added.split(text, self.classes, &mut |seg| match seg {
                Segment::Text(t) => self.encode_plain(t, buf, out),
                Segment::Added(id) => out.push(id),
            }),
        }
    }

    fn encode_plain(&self, text: &str, buf: &mut EncodeBuffers, out: &mut Vec<u32>) {
        let EncodeBuffers { chars, scratch } = buf;
        for line in pretok::independent_lines(text, self.classes) {
            pretok::pre_tokenize(line, self.classes, chars, &mut |piece| {
                self.bpe.encode_piece(piece.as_bytes(), out, scratch)
            });
        }
    }

    /// Text of `ids` (HF `decode(ids, skip_special_tokens=False)`): token bytes joined,
    /// invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_filtered(ids, false)
    }

    /// Like [`Tokenizer::decode`] but drops special-flagged added tokens (HF
    /// `skip_special_tokens=True`; `<think>` and `<｜User｜>` are not special-flagged).
    pub fn decode_skip_special(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        self.decode_filtered(ids, true)
    }

    fn decode_filtered(&self, ids: &[u32], skip_special: bool) -> Result<String, TokenizerError> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let b = self.token_bytes(id).ok_or(TokenizerError::UnknownId(id))?;
            if !(skip_special && self.is_special(id)) {
                bytes.extend_from_slice(b);
            }
        }
        Ok(match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// A fresh incremental decoder (it borrows nothing; pass `self` to each push).
    pub fn stream_decoder(&self) -> StreamDecoder {
        StreamDecoder::new()
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.bpe.merges.len())
            .field("added_tokens", &self.added.tokens.len())
            .field("specials", &self.specials)
            .finish()
    }
}
