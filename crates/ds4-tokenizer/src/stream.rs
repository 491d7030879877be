//! Incremental detokenization that never emits part of a UTF-8 sequence.

use crate::{Tokenizer, TokenizerError};

/// Turns ids into text one at a time. A token may end in the middle of a multi-byte
/// character (byte-level BPE splits emoji and CJK freely), so the bytes of an unfinished
/// character are held back until the token that completes it arrives. Bytes that can
/// never become valid UTF-8 are replaced by U+FFFD exactly where
/// [`String::from_utf8_lossy`] (what [`Tokenizer::decode`] uses) would put one, so the
/// concatenation of every chunk plus [`StreamDecoder::finish`] equals `decode(ids)`.
#[derive(Clone, Debug, Default)]
pub struct StreamDecoder {
    pending: Vec<u8>,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one token and returns the text it completes (often empty mid-character).
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String, TokenizerError> {
        let bytes = tokenizer
            .token_bytes(id)
            .ok_or(TokenizerError::UnknownId(id))?;
        Ok(self.push_bytes(bytes))
    }

    /// Adds raw bytes and returns every character they complete.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        while start < self.pending.len() {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                }
                Err(e) => {
                    let valid_end = start + e.valid_up_to();
                    if let Ok(s) = std::str::from_utf8(&self.pending[start..valid_end]) {
                        out.push_str(s);
                    }
                    match e.error_len() {
                        // A bad sequence: later bytes cannot repair it.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            start = valid_end + bad;
                        }
                        // The start of a character whose remaining bytes have not come yet.
                        None => {
                            start = valid_end;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// True while bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: an unfinished character becomes U+FFFD (as in `decode`).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}
