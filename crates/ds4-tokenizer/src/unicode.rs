//! Per-code-point character classes for the pre-tokenizer.
//!
//! The pre-tokenizer regexes of the DeepSeek V4 tokenizer.json use `\p{N}`, `\p{L}`,
//! `\p{M}`, `\p{P}`, `\p{S}` and `\s`. Their members are taken from `regex-syntax`, the
//! crate through which Hugging Face `tokenizers` (built with `fancy-regex`) resolves the
//! very same classes, so both sides agree on the Unicode version. The matching itself is
//! hand-written in `pretok.rs`; only the tables come from there.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex_syntax::hir::{Class, HirKind};

use crate::TokenizerError;

/// `\p{L}`
pub(crate) const LETTER: u8 = 1;
/// `\p{M}`
pub(crate) const MARK: u8 = 1 << 1;
/// `\p{N}`
pub(crate) const NUMBER: u8 = 1 << 2;
/// `\p{P}`
pub(crate) const PUNCT: u8 = 1 << 3;
/// `\p{S}`
pub(crate) const SYMBOL: u8 = 1 << 4;
/// `\s` (Unicode White_Space)
pub(crate) const SPACE: u8 = 1 << 5;
/// `[一-龥぀-ゟ゠-ヿ]`, the second Split of the pre-tokenizer.
pub(crate) const CJK: u8 = 1 << 6;
/// `\w`, used only by HF's `single_word` added-token flag.
pub(crate) const WORD: u8 = 1 << 7;

const BLOCK: usize = 256;
const N_BLOCKS: usize = 0x110000 / BLOCK;

/// Two-stage lookup table: code point → class bits. Identical 256-code-point blocks are
/// stored once (most of the code space is unassigned or uniform), which keeps the table
/// around 100 KiB and cache-friendly.
pub(crate) struct Classes {
    stage1: Vec<u16>,
    stage2: Vec<[u8; BLOCK]>,
}

impl Classes {
    #[inline(always)]
    pub(crate) fn of(&self, c: char) -> u8 {
        let cp = c as usize;
        let block = self.stage1[cp / BLOCK] as usize;
        self.stage2[block][cp % BLOCK]
    }
}

fn class_ranges(pattern: &str) -> Result<Vec<(u32, u32)>, TokenizerError> {
    let hir = regex_syntax::parse(pattern)
        .map_err(|e| TokenizerError::UnicodeTables(format!("{pattern}: {e}")))?;
    match hir.kind() {
        HirKind::Class(Class::Unicode(cls)) => Ok(cls
            .ranges()
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .collect()),
        other => Err(TokenizerError::UnicodeTables(format!(
            "{pattern}: expected a Unicode class, got {other:?}"
        ))),
    }
}

fn build() -> Result<Classes, TokenizerError> {
    let mut flat = vec![0u8; 0x110000];
    let classes = [
        (r"\p{L}", LETTER),
        (r"\p{M}", MARK),
        (r"\p{N}", NUMBER),
        (r"\p{P}", PUNCT),
        (r"\p{S}", SYMBOL),
        (r"\s", SPACE),
        (r"\w", WORD),
        // Written with escapes so the ranges are visible: U+4E00–U+9FA5, U+3040–U+309F,
        // U+30A0–U+30FF, exactly the characters of the tokenizer.json pattern.
        (
            r"[\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]",
            CJK,
        ),
    ];
    for (pattern, bit) in classes {
        for (lo, hi) in class_ranges(pattern)? {
            for cell in &mut flat[lo as usize..=hi as usize] {
                *cell |= bit;
            }
        }
    }
    let mut stage1 = Vec::with_capacity(N_BLOCKS);
    let mut stage2: Vec<[u8; BLOCK]> = Vec::new();
    let mut seen: HashMap<[u8; BLOCK], u16> = HashMap::new();
    for chunk in flat.chunks_exact(BLOCK) {
        let mut block = [0u8; BLOCK];
        block.copy_from_slice(chunk);
        let idx = *seen.entry(block).or_insert_with(|| {
            stage2.push(block);
            (stage2.len() - 1) as u16
        });
        stage1.push(idx);
    }
    Ok(Classes { stage1, stage2 })
}

static TABLES: OnceLock<Result<Classes, TokenizerError>> = OnceLock::new();

/// The process-wide class table, built on first use (a few milliseconds).
pub(crate) fn classes() -> Result<&'static Classes, TokenizerError> {
    TABLES.get_or_init(build).as_ref().map_err(Clone::clone)
}
