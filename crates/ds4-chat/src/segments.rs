//! The rendered prompt as a sequence of segments.
//!
//! The official pipeline renders one string and tokenizes it with every added token
//! recognised anywhere, so a user who types `<｜Assistant｜>` or a DSML block gets the
//! real control token. We keep the split instead: a [`Segment::Special`] is a control
//! token the encoder itself wrote, a [`Segment::Text`] is everything else (client
//! content and template prose) and must be tokenized as plain text. Adjacent text is
//! merged into one segment, and every special the encoder writes (including the
//! `｜DSML｜`, `<think>` and `</think>` inside the tool prompt template) is its own
//! segment, so "BPE each text segment, map each special to its id" produces exactly
//! the ids Hugging Face `tokenizers` gives for the concatenated string whenever the
//! client content contains no special-token text.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A quick-instruction task (official README table; internal to DeepSeek's service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Action,
    Query,
    Authority,
    Domain,
    Title,
    ReadUrl,
}

/// A control token written by the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialToken {
    Bos,
    Eos,
    User,
    Assistant,
    ThinkStart,
    ThinkEnd,
    /// `｜DSML｜` (id 128825): DSML tags are `<` + this token + `tool_calls>` etc.
    Dsml,
    LatestReminder,
    Task(Task),
}

impl SpecialToken {
    /// Every special the encoder can write. No token's text contains another's, so
    /// the leftmost match in a template is unambiguous.
    pub const ALL: [SpecialToken; 14] = [
        SpecialToken::Bos,
        SpecialToken::Eos,
        SpecialToken::User,
        SpecialToken::Assistant,
        SpecialToken::ThinkStart,
        SpecialToken::ThinkEnd,
        SpecialToken::Dsml,
        SpecialToken::LatestReminder,
        SpecialToken::Task(Task::Action),
        SpecialToken::Task(Task::Query),
        SpecialToken::Task(Task::Authority),
        SpecialToken::Task(Task::Domain),
        SpecialToken::Task(Task::Title),
        SpecialToken::Task(Task::ReadUrl),
    ];

    /// The token's text in the official tokenizer.json.
    pub const fn text(self) -> &'static str {
        match self {
            SpecialToken::Bos => "<｜begin▁of▁sentence｜>",
            SpecialToken::Eos => "<｜end▁of▁sentence｜>",
            SpecialToken::User => "<｜User｜>",
            SpecialToken::Assistant => "<｜Assistant｜>",
            SpecialToken::ThinkStart => "<think>",
            SpecialToken::ThinkEnd => "</think>",
            SpecialToken::Dsml => "｜DSML｜",
            SpecialToken::LatestReminder => "<｜latest_reminder｜>",
            SpecialToken::Task(Task::Action) => "<｜action｜>",
            SpecialToken::Task(Task::Query) => "<｜query｜>",
            SpecialToken::Task(Task::Authority) => "<｜authority｜>",
            SpecialToken::Task(Task::Domain) => "<｜domain｜>",
            SpecialToken::Task(Task::Title) => "<｜title｜>",
            SpecialToken::Task(Task::ReadUrl) => "<｜read_url｜>",
        }
    }
}

/// One piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A control token written by the encoder: encode as its single special id.
    Special(SpecialToken),
    /// Text to tokenize as plain text, with no added-token matching.
    Text(String),
}

/// A rendered prompt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompt {
    segments: Vec<Segment>,
}

impl Prompt {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn into_segments(self) -> Vec<Segment> {
        self.segments
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The prompt as one string, exactly what the official `encode_messages` returns.
    /// Also the disk-cache key text.
    pub fn render_to_string(&self) -> String {
        let mut s = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Special(t) => s.push_str(t.text()),
                Segment::Text(t) => s.push_str(t),
            }
        }
        s
    }

    /// Append a control token.
    pub fn push_special(&mut self, t: SpecialToken) {
        self.segments.push(Segment::Special(t));
    }

    /// Append client-provided text. Whatever it contains stays plain text.
    pub fn push_text(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if let Some(Segment::Text(last)) = self.segments.last_mut() {
            last.push_str(s);
        } else {
            self.segments.push(Segment::Text(s.to_owned()));
        }
    }

    /// Append text written by the encoder itself (a template). Occurrences of special
    /// token text in it become [`Segment::Special`], as the official tokenization of
    /// the rendered string would make them.
    pub fn push_template(&mut self, mut s: &str) {
        while !s.is_empty() {
            let next = SpecialToken::ALL
                .iter()
                .filter_map(|t| s.find(t.text()).map(|at| (at, *t)))
                .min_by_key(|(at, _)| *at);
            match next {
                Some((at, tok)) => {
                    self.push_text(&s[..at]);
                    self.push_special(tok);
                    s = &s[at + tok.text().len()..];
                }
                None => {
                    self.push_text(s);
                    break;
                }
            }
        }
    }

    /// Append another prompt's segments.
    pub fn append(&mut self, other: Prompt) {
        for seg in other.segments {
            match seg {
                Segment::Special(t) => self.push_special(t),
                Segment::Text(t) => self.push_text(&t),
            }
        }
    }
}

impl fmt::Display for Prompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render_to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_splits_at_specials_and_text_merges() {
        let mut p = Prompt::new();
        p.push_text("a");
        p.push_template("b<｜DSML｜tool_calls> (<think>) </think>");
        p.push_text("<｜User｜>");
        assert_eq!(
            p.segments(),
            &[
                Segment::Text("ab<".into()),
                Segment::Special(SpecialToken::Dsml),
                Segment::Text("tool_calls> (".into()),
                Segment::Special(SpecialToken::ThinkStart),
                Segment::Text(") ".into()),
                Segment::Special(SpecialToken::ThinkEnd),
                Segment::Text("<｜User｜>".into()),
            ]
        );
        assert_eq!(
            p.render_to_string(),
            "ab<｜DSML｜tool_calls> (<think>) </think><｜User｜>"
        );
    }
}
