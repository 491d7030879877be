//! The DeepSeek V4 pre-tokenizer, matched by hand against Unicode classes.
//!
//! tokenizer.json runs a `Sequence` of three `Split`s (all `Isolated`, so both matches
//! and the text between them become pieces), each applied to every piece of the one
//! before:
//!
//! 1. `\p{N}{1,3}`
//! 2. `[一-龥぀-ゟ゠-ヿ]+`
//! 3. `[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+|
//!    ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
//!
//! Since no number is in the CJK ranges, splits 1 and 2 cut the text into segments that
//! are: chunks of up to three numbers (left to right), maximal CJK runs, and maximal runs
//! of everything else. Split 3 never cuts a chunk of numbers (none of its alternatives can
//! start a match on a number without a letter behind it), and it runs on each other
//! segment on its own: its `(?!\S)` look-ahead sees a segment's end as the end of the
//! text, which is how HF applies a regex to a piece.

use crate::unicode::{CJK, Classes, LETTER, MARK, NUMBER, PUNCT, SPACE, SYMBOL};

#[derive(Clone, Copy)]
pub(crate) struct CharInfo {
    off: usize,
    c: char,
    k: u8,
}

/// Splits `text` into pre-tokens, calling `emit` with each non-empty piece in order.
pub(crate) fn pre_tokenize<'a>(
    text: &'a str,
    cls: &Classes,
    buf: &mut Vec<CharInfo>,
    emit: &mut impl FnMut(&'a str),
) {
    buf.clear();
    buf.extend(text.char_indices().map(|(off, c)| CharInfo {
        off,
        c,
        k: cls.of(c),
    }));
    let chars = &buf[..];
    let n = chars.len();
    let off = |i: usize| if i < n { chars[i].off } else { text.len() };
    let mut i = 0;
    while i < n {
        let k = chars[i].k;
        let mut j = i + 1;
        if k & NUMBER != 0 {
            while j < n && chars[j].k & NUMBER != 0 {
                j += 1;
            }
            let mut s = i;
            while s < j {
                let e = (s + 3).min(j);
                emit(&text[off(s)..off(e)]);
                s = e;
            }
        } else if k & CJK != 0 {
            while j < n && chars[j].k & CJK != 0 {
                j += 1;
            }
            split_main(text, chars, i, j, emit);
        } else {
            while j < n && chars[j].k & (NUMBER | CJK) == 0 {
                j += 1;
            }
            split_main(text, chars, i, j, emit);
        }
        i = j;
    }
}

/// Cuts `text` after every `\n` that is followed by a non-whitespace character. The
/// pre-tokenizer gives the same pieces on each part as on the whole, so a long prompt
/// needs scratch space for its longest line only. Why the cut is safe: a `\n` belongs to
/// a match of ` ?[\p{P}\p{S}]+[\r\n]*` or `\s*[\r\n]+`, and both end at the first
/// non-newline / non-whitespace character, i.e. right at the cut; the lookahead
/// alternative `\s+(?!\S)` is never reached for a run holding a newline; `\n` can lead
/// neither a letter run nor a punctuation run; and it is neither a number nor CJK, so the
/// first two splits also restart at the cut.
pub(crate) fn independent_lines<'a>(
    text: &'a str,
    cls: &'a Classes,
) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let mut from = 0;
        while let Some(nl) = bytes[from..].iter().position(|&b| b == b'\n') {
            let cut = from + nl + 1;
            let next = rest[cut..].chars().next();
            if next.is_some_and(|c| cls.of(c) & SPACE == 0) {
                let (line, tail) = rest.split_at(cut);
                rest = tail;
                return Some(line);
            }
            from = cut;
        }
        let line = rest;
        rest = "";
        Some(line)
    })
}

/// Split 3 on the segment `chars[lo..hi]`: find matches left to right, the text between
/// two matches (characters no alternative accepts) is a piece of its own.
fn split_main<'a>(
    text: &'a str,
    chars: &[CharInfo],
    lo: usize,
    hi: usize,
    emit: &mut impl FnMut(&'a str),
) {
    let off = |i: usize| {
        if i < chars.len() {
            chars[i].off
        } else {
            text.len()
        }
    };
    let mut gap = lo;
    let mut i = lo;
    while i < hi {
        match match_at(chars, i, hi) {
            Some(end) => {
                if gap < i {
                    emit(&text[off(gap)..off(i)]);
                }
                emit(&text[off(i)..off(end)]);
                i = end;
                gap = end;
            }
            None => i += 1,
        }
    }
    if gap < hi {
        emit(&text[off(gap)..off(hi)]);
    }
}

#[inline]
fn is_newline(c: char) -> bool {
    c == '\r' || c == '\n'
}

/// End (exclusive) of the match of split 3's alternation starting exactly at `i`, trying
/// the alternatives in order the way a backtracking engine does (first that matches wins).
#[inline]
fn match_at(chars: &[CharInfo], i: usize, hi: usize) -> Option<usize> {
    let run = |mut j: usize, mask: u8| {
        while j < hi && chars[j].k & mask != 0 {
            j += 1;
        }
        j
    };
    let c = chars[i];
    let next = chars.get(i + 1).filter(|_| i + 1 < hi);

    // [!"#...~][A-Za-z]+
    if c.c.is_ascii_punctuation() && next.is_some_and(|n| n.c.is_ascii_alphabetic()) {
        let mut j = i + 2;
        while j < hi && chars[j].c.is_ascii_alphabetic() {
            j += 1;
        }
        return Some(j);
    }

    // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ : the optional lead is taken when a letter or
    // mark follows it; otherwise the engine backtracks to the run starting at `i` itself.
    let lead_ok = !is_newline(c.c) && c.k & (LETTER | PUNCT | SYMBOL) == 0;
    if lead_ok && next.is_some_and(|n| n.k & (LETTER | MARK) != 0) {
        return Some(run(i + 2, LETTER | MARK));
    }
    if c.k & (LETTER | MARK) != 0 {
        return Some(run(i + 1, LETTER | MARK));
    }

    // ' ?[\p{P}\p{S}]+[\r\n]*' : only U+0020 may lead.
    let ps_start = if c.c == ' ' && next.is_some_and(|n| n.k & (PUNCT | SYMBOL) != 0) {
        i + 1
    } else {
        i
    };
    if chars[ps_start].k & (PUNCT | SYMBOL) != 0 {
        let mut j = run(ps_start + 1, PUNCT | SYMBOL);
        while j < hi && is_newline(chars[j].c) {
            j += 1;
        }
        return Some(j);
    }

    if c.k & SPACE == 0 {
        return None;
    }
    let end = run(i + 1, SPACE);
    // \s*[\r\n]+ : greedy \s* gives back characters until [\r\n]+ can match, so the match
    // ends just after the last \r or \n of the whitespace run.
    if let Some(last_nl) = (i..end).rev().find(|&j| is_newline(chars[j].c)) {
        return Some(last_nl + 1);
    }
    // \s+(?!\S) : the whole run at the end of the segment, otherwise all but its last
    // character (which is whitespace, so the look-ahead holds there).
    if end == hi || end - 1 > i {
        return Some(if end == hi { end } else { end - 1 });
    }
    // \s+
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unicode::classes;

    fn split(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        pre_tokenize(text, classes().expect("tables"), &mut buf, &mut |p| {
            out.push(p)
        });
        out
    }

    // Each case is a behaviour the spec calls out where ds4's C splitter and HF differ
    // or where the regex is easy to get wrong.
    #[test]
    fn splits_like_the_regex() {
        // \s+(?!\S) leaves the last space to lead the word.
        assert_eq!(split("    let"), ["   ", " let"]);
        // ...but takes the whole run at the end of a segment.
        assert_eq!(split("a   "), ["a", "   "]);
        // Numbers of every script, in threes from the left.
        assert_eq!(split("١٢٣٤"), ["١٢٣", "٤"]);
        assert_eq!(split("12345"), ["123", "45"]);
        // Non-ASCII punctuation keeps its newline.
        assert_eq!(split("好。\n下"), ["好", "。\n", "下"]);
        // \s*[\r\n]+ ends after the last newline of the run.
        assert_eq!(split("a \n \n  b"), ["a", " \n \n", " ", " b"]);
        // ASCII punctuation + ASCII letters, contractions.
        assert_eq!(split("don't .com"), ["don", "'t", " .", "com"]);
        // The CJK split isolates kana/ideograph runs before the main split sees them.
        assert_eq!(split("日本語abc"), ["日本語", "abc"]);
        // A control character before a letter leads it; alone it is a gap.
        assert_eq!(split("\u{1}x\u{2}"), ["\u{1}x", "\u{2}"]);
    }
}
