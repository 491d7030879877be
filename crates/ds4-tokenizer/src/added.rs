//! Added tokens, matched in the raw text before pre-tokenization the way HF's
//! `AddedVocabulary::extract_and_normalize` does: a leftmost-longest pass over the tokens
//! with `normalized: false`, then a second pass over the gaps with the `normalized: true`
//! ones (the normalizer of the V4 tokenizer does nothing, so the gaps are unchanged).
//! `single_word`, `lstrip` and `rstrip` follow HF's `find_matches`.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::TokenizerError;
use crate::unicode::{Classes, WORD};

/// One added token with its Hugging Face flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedToken {
    pub id: u32,
    pub content: String,
    /// HF `special`: only affects `decode_skip_special`; every added token, special or
    /// not, is matched in text by [`crate::SpecialMode::Recognize`].
    pub special: bool,
    pub normalized: bool,
    pub lstrip: bool,
    pub rstrip: bool,
    pub single_word: bool,
}

pub(crate) enum Segment<'a> {
    Text(&'a str),
    Added(u32),
}

struct Pass {
    automaton: AhoCorasick,
    /// Automaton pattern index → index into `AddedVocab::tokens`.
    token_of: Vec<usize>,
}

pub(crate) struct AddedVocab {
    pub(crate) tokens: Vec<AddedToken>,
    passes: [Option<Pass>; 2],
}

impl AddedVocab {
    pub(crate) fn new(tokens: Vec<AddedToken>) -> Result<Self, TokenizerError> {
        let build = |normalized: bool| -> Result<Option<Pass>, TokenizerError> {
            let token_of: Vec<usize> = (0..tokens.len())
                .filter(|&i| tokens[i].normalized == normalized && !tokens[i].content.is_empty())
                .collect();
            if token_of.is_empty() {
                return Ok(None);
            }
            let automaton = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(token_of.iter().map(|&i| tokens[i].content.as_str()))
                .map_err(|e| TokenizerError::AddedTokens(e.to_string()))?;
            Ok(Some(Pass {
                automaton,
                token_of,
            }))
        };
        let passes = [build(false)?, build(true)?];
        Ok(AddedVocab { tokens, passes })
    }

    /// Cuts `text` into plain-text gaps and added-token ids, in order.
    pub(crate) fn split<'a>(
        &self,
        text: &'a str,
        cls: &Classes,
        emit: &mut impl FnMut(Segment<'a>),
    ) {
        self.find_matches(text, 0, cls, &mut |seg| match seg {
            Segment::Text(gap) => self.find_matches(gap, 1, cls, emit),
            added => emit(added),
        });
    }

    fn find_matches<'a>(
        &self,
        sentence: &'a str,
        pass: usize,
        cls: &Classes,
        emit: &mut impl FnMut(Segment<'a>),
    ) {
        let Some(p) = &self.passes[pass] else {
            if !sentence.is_empty() {
                emit(Segment::Text(sentence));
            }
            return;
        };
        let is_word = |c: Option<char>| c.is_some_and(|c| cls.of(c) & WORD != 0);
        let mut start_offset = 0;
        for m in p.automaton.find_iter(sentence) {
            let tok = &self.tokens[p.token_of[m.pattern().as_usize()]];
            let (mut start, mut stop) = (m.start(), m.end());
            if tok.single_word {
                let start_space = start == 0 || !is_word(sentence[..start].chars().next_back());
                let stop_space =
                    stop == sentence.len() || !is_word(sentence[stop..].chars().next());
                if !start_space || !stop_space {
                    continue;
                }
            }
            if tok.lstrip {
                let trimmed = sentence[..start]
                    .trim_end_matches(char::is_whitespace)
                    .len();
                start = trimmed.max(start_offset);
            }
            if tok.rstrip {
                let rest = &sentence[stop..];
                stop += rest.len() - rest.trim_start_matches(char::is_whitespace).len();
            }
            if start_offset < start {
                emit(Segment::Text(&sentence[start_offset..start]));
            }
            emit(Segment::Added(tok.id));
            start_offset = stop;
        }
        if start_offset < sentence.len() {
            emit(Segment::Text(&sentence[start_offset..]));
        }
    }
}
