//! Streaming parser for generated text: reasoning, visible text and DSML tool calls.
//!
//! Feed decoded text in any pieces ([`DsmlParser::feed`], or raw bytes with
//! [`DsmlParser::feed_bytes`]); call [`DsmlParser::finish`] at the end. The events
//! are the same however the text is split, once consecutive `Reasoning`, `Text` and
//! `ToolCallArgs` events are merged.
//!
//! # What is recognised
//!
//! * `<think>` … `</think>`: reasoning. Nothing inside it is a tool call.
//! * With tools enabled, a tool-call block, in the official form or ds4's tolerated
//!   variants (the dialect is fixed by the opening tag, inner tags must use the same
//!   prefix):
//!   `<｜DSML｜tool_calls>` (official), `<DSML｜tool_calls>`, `<tool_calls>`.
//!   A `"\n\n"` directly before the opening tag belongs to the block (the encoder
//!   writes `content + "\n\n" + block`), so it is not emitted as text.
//! * Inside a block: any whitespace between tags;
//!   `<P invoke name="N">`, `</P invoke>`,
//!   `<P parameter name="K" string="true|false">VALUE</P parameter>` where a missing
//!   `string` attribute means a string, and VALUE runs to the first
//!   `</P parameter` (which must be followed by `>`), verbatim, with no entity
//!   decoding (the official encoder escapes nothing).
//!
//! # Events for a call
//!
//! `ToolCallStart` once `<P invoke name="N">` is complete, then `ToolCallArgs`
//! deltas whose concatenation is the arguments JSON text exactly as the official
//! `decode_dsml_to_arguments` writes it (`{"k": "v", "n": 1}`): string values
//! stream as they arrive (Python `json.dumps` escaping); a JSON value is sent whole
//! when its closing tag arrives, verbatim if it is valid JSON, otherwise as a JSON
//! string of its text. `ToolCallEnd` at `</P invoke>` carries the full call, and
//! `ToolCallsDone` marks the block's closing tag (generation can stop there).
//!
//! # Malformed or truncated blocks
//!
//! When the text stops matching the grammar (or ends inside a block, or repeats a
//! parameter name), the block is abandoned: the raw text consumed by the block so far
//! — from the `"\n\n"` or opening tag up to, not including, the offending character
//! — is emitted as `Text` if no call of this block was started, otherwise as
//! `ToolCallsAborted { raw, first_index }` (streamed calls cannot be retracted; every
//! call with index ≥ `first_index` is void). Parsing then resumes in text mode at the
//! offending character, so a later well-formed block is still recognised.

use crate::pyjson;
use serde_json::{Map, Value};

/// How the parser starts and what it looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserOptions {
    /// The prompt ended with `<think>`: the output opens with reasoning.
    pub start_in_reasoning: bool,
    /// Tools are active: recognise DSML tool-call blocks. Without tools, DSML text
    /// is ordinary text.
    pub tools: bool,
}

/// A fully parsed tool call.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedToolCall {
    pub name: String,
    /// String parameters as strings, JSON parameters parsed.
    pub arguments: Map<String, Value>,
    /// The arguments as JSON text in parameter order (the official decoder's form);
    /// equal to the concatenated `ToolCallArgs` deltas.
    pub arguments_json: String,
}

impl ParsedToolCall {
    /// The OpenAI-shaped call for the history, with `arguments_json` as arguments:
    /// rendering it again reproduces the parsed DSML.
    pub fn to_tool_call(&self, id: Option<&str>) -> crate::types::ToolCall {
        crate::types::ToolCall::new(id, &self.name, &self.arguments_json)
    }
}

/// One parser output.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Reasoning(String),
    Text(String),
    ToolCallStart {
        index: usize,
        name: String,
    },
    ToolCallArgs {
        index: usize,
        delta: String,
    },
    ToolCallEnd {
        index: usize,
        call: ParsedToolCall,
    },
    /// The block's closing tag was seen.
    ToolCallsDone,
    /// A block failed after some of its calls were streamed; see the module docs.
    ToolCallsAborted {
        raw: String,
        first_index: usize,
    },
    /// [`DsmlParser::finish`] was called.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Full,
    Short,
    Plain,
}

impl Dialect {
    const ALL: [Dialect; 3] = [Dialect::Full, Dialect::Short, Dialect::Plain];

    fn prefix(self) -> &'static str {
        match self {
            Dialect::Full => "｜DSML｜",
            Dialect::Short => "DSML｜",
            Dialect::Plain => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Think,
    Block(Dialect),
}

#[derive(Debug, Clone)]
struct ParamBuilder {
    name: String,
    is_string: bool,
    /// JSON value text (string values are streamed, not kept here).
    json: String,
    /// String value text, for the parsed map.
    string: String,
    json_in_str: bool,
    json_escape: bool,
    /// Open JSON containers (`{` / `[`) of a non-string value, to tell object keys
    /// (structure) from string values (payload).
    json_stack: Vec<char>,
    json_expect_key: bool,
    json_str_is_key: bool,
}

impl ParamBuilder {
    /// Track the JSON lexical state of a non-string value, one character at a time.
    fn lex(&mut self, c: char) {
        if self.json_in_str {
            if self.json_escape {
                self.json_escape = false;
            } else if c == '\\' {
                self.json_escape = true;
            } else if c == '"' {
                self.json_in_str = false;
            }
            return;
        }
        match c {
            '"' => {
                self.json_in_str = true;
                self.json_str_is_key = self.json_expect_key;
            }
            '{' => {
                self.json_stack.push('{');
                self.json_expect_key = true;
            }
            '[' => {
                self.json_stack.push('[');
                self.json_expect_key = false;
            }
            '}' | ']' => {
                self.json_stack.pop();
                self.json_expect_key = false;
            }
            ':' => self.json_expect_key = false,
            ',' => self.json_expect_key = self.json_stack.last() == Some(&'{'),
            _ => {}
        }
    }

    /// Inside a string value (not an object key) of a JSON parameter.
    fn in_json_string_value(&self) -> bool {
        self.json_in_str && !self.json_str_is_key
    }
}

#[derive(Debug, Clone)]
struct CallBuilder {
    index: usize,
    name: String,
    arguments: Map<String, Value>,
    json: String,
}

#[derive(Debug, Clone)]
enum Phase {
    BetweenInvokes,
    InInvoke(CallBuilder),
    Value(CallBuilder, ParamBuilder),
}

#[derive(Debug, Clone)]
struct Block {
    dialect: Dialect,
    raw: String,
    first_index: usize,
    started: bool,
    phase: Phase,
}

#[derive(Debug, Clone)]
enum State {
    Reasoning,
    Text,
    Block(Box<Block>),
}

/// The streaming parser. See the module documentation for the grammar and events.
#[derive(Debug, Clone)]
pub struct DsmlParser {
    opts: ParserOptions,
    state: State,
    /// Input not yet consumed: a possible marker prefix waiting for more text.
    buf: String,
    /// Trailing bytes of an incomplete UTF-8 sequence (from `feed_bytes`).
    utf8_tail: Vec<u8>,
    markers: Vec<(String, Marker)>,
    next_index: usize,
    finished: bool,
}

const THINK_START: &str = "<think>";
const THINK_END: &str = "</think>";
/// Names longer than this are not a tag: give up instead of holding text forever.
const MAX_NAME: usize = 256;

enum M {
    More,
    Bad,
}

/// A cursor for matching tags against a buffer that may end early.
struct Cur<'a> {
    s: &'a str,
    i: usize,
}

impl Cur<'_> {
    fn rest(&self) -> &str {
        &self.s[self.i..]
    }

    fn lit(&mut self, l: &str) -> Result<(), M> {
        let r = self.rest();
        if r.starts_with(l) {
            self.i += l.len();
            Ok(())
        } else if l.starts_with(r) {
            Err(M::More)
        } else {
            Err(M::Bad)
        }
    }

    fn ws0(&mut self) -> Result<(), M> {
        let r = self.rest();
        let n = r.len() - r.trim_start().len();
        self.i += n;
        if self.i == self.s.len() {
            Err(M::More)
        } else {
            Ok(())
        }
    }

    fn ws1(&mut self) -> Result<(), M> {
        match self.rest().chars().next() {
            None => Err(M::More),
            Some(c) if c.is_whitespace() => self.ws0(),
            Some(_) => Err(M::Bad),
        }
    }

    /// An attribute value up to its closing quote (consumed).
    fn quoted(&mut self) -> Result<String, M> {
        for (n, (j, c)) in self.rest().char_indices().enumerate() {
            if n > MAX_NAME {
                return Err(M::Bad);
            }
            match c {
                '"' => {
                    let v = self.rest()[..j].to_owned();
                    self.i += j + 1;
                    return Ok(v);
                }
                '<' | '>' | '\n' => return Err(M::Bad),
                _ => {}
            }
        }
        Err(M::More)
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
}

/// `<P invoke name="N">`
fn match_invoke_open(s: &str, d: Dialect) -> Result<(usize, String), M> {
    let mut c = Cur { s, i: 0 };
    c.lit("<")?;
    c.lit(d.prefix())?;
    c.lit("invoke")?;
    c.ws1()?;
    c.lit("name=\"")?;
    let name = c.quoted()?;
    c.ws0()?;
    c.lit(">")?;
    Ok((c.i, name))
}

/// `<P parameter name="K" [string="true|false"]>`
fn match_param_open(s: &str, d: Dialect) -> Result<(usize, String, bool), M> {
    let mut c = Cur { s, i: 0 };
    c.lit("<")?;
    c.lit(d.prefix())?;
    c.lit("parameter")?;
    c.ws1()?;
    c.lit("name=\"")?;
    let name = c.quoted()?;
    c.ws0()?;
    let mut is_string = true;
    if c.peek() != Some('>') {
        c.lit("string=\"")?;
        match c.peek() {
            None => return Err(M::More),
            Some('t') => c.lit("true\"")?,
            Some('f') => {
                c.lit("false\"")?;
                is_string = false;
            }
            Some(_) => return Err(M::Bad),
        }
        c.ws0()?;
    }
    c.lit(">")?;
    Ok((c.i, name, is_string))
}

/// `</P NAME>`
fn match_close(s: &str, d: Dialect, name: &str) -> Result<usize, M> {
    let mut c = Cur { s, i: 0 };
    c.lit("</")?;
    c.lit(d.prefix())?;
    c.lit(name)?;
    c.lit(">")?;
    Ok(c.i)
}

/// The result of trying several alternatives at one position.
enum Alt<T> {
    Hit(T),
    More,
    Bad,
}

fn first_hit<T>(tries: impl IntoIterator<Item = Result<T, M>>) -> Alt<T> {
    let mut more = false;
    for t in tries {
        match t {
            Ok(v) => return Alt::Hit(v),
            Err(M::More) => more = true,
            Err(M::Bad) => {}
        }
    }
    if more { Alt::More } else { Alt::Bad }
}

/// Where the next marker starts in `buf`: a complete one, a possible one cut off by
/// the end of the buffer, or none.
enum Scan<K> {
    None,
    Partial(usize),
    Full(usize, K, usize),
}

fn scan<K: Copy>(buf: &str, markers: &[(String, K)]) -> Scan<K> {
    for (i, ch) in buf.char_indices() {
        if ch != '<' && ch != '\n' {
            continue;
        }
        let rest = &buf[i..];
        let mut partial = false;
        for (m, k) in markers {
            if rest.starts_with(m.as_str()) {
                return Scan::Full(i, *k, m.len());
            }
            if m.starts_with(rest) {
                partial = true;
            }
        }
        if partial {
            return Scan::Partial(i);
        }
    }
    Scan::None
}

fn push_event(out: &mut Vec<Event>, ev: Event) {
    // Merge adjacent text-like events so callers see fewer, larger pieces.
    match (out.last_mut(), ev) {
        (Some(Event::Text(a)), Event::Text(b)) => a.push_str(&b),
        (Some(Event::Reasoning(a)), Event::Reasoning(b)) => a.push_str(&b),
        (
            Some(Event::ToolCallArgs { index: i, delta: a }),
            Event::ToolCallArgs { index: j, delta: b },
        ) if *i == j => a.push_str(&b),
        (_, Event::Text(b)) | (_, Event::Reasoning(b)) if b.is_empty() => {}
        (_, ev) => out.push(ev),
    }
}

/// What one step of block parsing did.
enum Step {
    Progress,
    NeedMore,
    Closed,
    Abort,
}

impl DsmlParser {
    pub fn new(opts: ParserOptions) -> Self {
        let mut markers = vec![(THINK_START.to_owned(), Marker::Think)];
        if opts.tools {
            for d in Dialect::ALL {
                let open = format!("<{}tool_calls>", d.prefix());
                markers.push((format!("\n\n{open}"), Marker::Block(d)));
                markers.push((open, Marker::Block(d)));
            }
        }
        Self {
            opts,
            state: if opts.start_in_reasoning {
                State::Reasoning
            } else {
                State::Text
            },
            buf: String::new(),
            utf8_tail: Vec::new(),
            markers,
            next_index: 0,
            finished: false,
        }
    }

    pub fn options(&self) -> ParserOptions {
        self.opts
    }

    /// Feed decoded text; returns the events it completes. Input after
    /// [`finish`](Self::finish) is ignored.
    pub fn feed(&mut self, text: &str) -> Vec<Event> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.buf.push_str(text);
        self.run(&mut out);
        out
    }

    /// Feed raw bytes (a token may end inside a UTF-8 sequence). Incomplete trailing
    /// sequences wait for the next bytes; invalid bytes become U+FFFD.
    pub fn feed_bytes(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut data = std::mem::take(&mut self.utf8_tail);
        data.extend_from_slice(bytes);
        let mut text = String::new();
        let mut rest: &[u8] = &data;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    text.push_str(s);
                    break;
                }
                Err(e) => {
                    let (ok, bad) = rest.split_at(e.valid_up_to());
                    // `valid_up_to` bytes are valid UTF-8 by definition.
                    text.push_str(std::str::from_utf8(ok).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            text.push('\u{FFFD}');
                            rest = &bad[n..];
                        }
                        None => {
                            self.utf8_tail = bad.to_vec();
                            break;
                        }
                    }
                }
            }
        }
        self.feed(&text)
    }

    /// End of generation: flush held text, abandon an unterminated block.
    pub fn finish(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        if !self.utf8_tail.is_empty() {
            self.utf8_tail.clear();
            self.buf.push('\u{FFFD}');
        }
        self.run(&mut out);
        if let State::Block(_) = self.state {
            self.abort(&mut out);
            self.run(&mut out);
        }
        let rest = std::mem::take(&mut self.buf);
        match self.state {
            State::Reasoning => push_event(&mut out, Event::Reasoning(rest)),
            _ => push_event(&mut out, Event::Text(rest)),
        }
        self.finished = true;
        out.push(Event::End);
        out
    }

    /// Inside `<think>`.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.state, State::Reasoning)
    }

    /// Inside a tool-call block (including argument payloads).
    pub fn in_tool_calls(&self) -> bool {
        matches!(self.state, State::Block(_))
    }

    /// The model is writing DSML structure: tags, attributes, whitespace between
    /// tags, everything of a JSON parameter except its string values (punctuation,
    /// numbers, literals, object keys), or a marker it has started — at least three
    /// characters of a block opening tag in text (`<｜D`, `<DS`, `<to`, after an
    /// optional `\n\n`), or of a closing parameter tag in a value (`</｜`). The
    /// server samples these tokens greedily. `<` and `</` alone stay payload, since
    /// they are common in code and markup.
    pub fn in_syntax(&self) -> bool {
        match &self.state {
            State::Reasoning => false,
            State::Text => {
                let pending = self.buf.strip_prefix("\n\n").unwrap_or(&self.buf);
                pending.chars().count() >= 3
                    && self.markers.iter().any(|(m, k)| {
                        matches!(k, Marker::Block(_)) && m.starts_with(self.buf.as_str())
                    })
            }
            State::Block(b) => match &b.phase {
                Phase::Value(_, p) => {
                    self.buf.chars().count() >= 3 || !(p.is_string || p.in_json_string_value())
                }
                _ => true,
            },
        }
    }

    /// The model is writing an argument payload: a `string="true"` value or a string
    /// value inside a JSON parameter. These keep the request's sampler.
    pub fn in_argument_payload(&self) -> bool {
        match &self.state {
            State::Block(b) => match &b.phase {
                Phase::Value(_, p) => {
                    self.buf.chars().count() < 3 && (p.is_string || p.in_json_string_value())
                }
                _ => false,
            },
            _ => false,
        }
    }

    fn run(&mut self, out: &mut Vec<Event>) {
        loop {
            let progressed = match &mut self.state {
                State::Reasoning => self.step_reasoning(out),
                State::Text => self.step_text(out),
                State::Block(_) => match self.step_block(out) {
                    Step::Progress => true,
                    Step::NeedMore => false,
                    Step::Closed => {
                        out.push(Event::ToolCallsDone);
                        self.state = State::Text;
                        true
                    }
                    Step::Abort => {
                        self.abort(out);
                        true
                    }
                },
            };
            if !progressed {
                break;
            }
        }
    }

    fn step_reasoning(&mut self, out: &mut Vec<Event>) -> bool {
        let markers = [(THINK_END.to_owned(), ())];
        match scan(&self.buf, &markers) {
            Scan::Full(i, (), len) => {
                push_event(out, Event::Reasoning(self.buf[..i].to_owned()));
                self.buf.drain(..i + len);
                self.state = State::Text;
                true
            }
            Scan::Partial(i) => {
                push_event(out, Event::Reasoning(self.buf[..i].to_owned()));
                self.buf.drain(..i);
                false
            }
            Scan::None => {
                push_event(out, Event::Reasoning(std::mem::take(&mut self.buf)));
                false
            }
        }
    }

    fn step_text(&mut self, out: &mut Vec<Event>) -> bool {
        match scan(&self.buf, &self.markers) {
            Scan::Full(i, marker, len) => {
                push_event(out, Event::Text(self.buf[..i].to_owned()));
                let raw: String = self.buf.drain(..i + len).skip(i).collect();
                self.state = match marker {
                    Marker::Think => State::Reasoning,
                    Marker::Block(dialect) => State::Block(Box::new(Block {
                        dialect,
                        raw,
                        first_index: self.next_index,
                        started: false,
                        phase: Phase::BetweenInvokes,
                    })),
                };
                true
            }
            Scan::Partial(i) => {
                push_event(out, Event::Text(self.buf[..i].to_owned()));
                self.buf.drain(..i);
                false
            }
            Scan::None => {
                push_event(out, Event::Text(std::mem::take(&mut self.buf)));
                false
            }
        }
    }

    /// Abandon the current block (see the module docs) and return to text mode.
    fn abort(&mut self, out: &mut Vec<Event>) {
        let State::Block(b) = std::mem::replace(&mut self.state, State::Text) else {
            return;
        };
        if b.started {
            out.push(Event::ToolCallsAborted {
                raw: b.raw,
                first_index: b.first_index,
            });
        } else {
            push_event(out, Event::Text(b.raw));
        }
    }

    /// Consume `n` bytes of the buffer into the block's raw text.
    fn consume(buf: &mut String, b: &mut Block, n: usize) {
        b.raw.extend(buf.drain(..n));
    }

    fn step_block(&mut self, out: &mut Vec<Event>) -> Step {
        let State::Block(b) = &mut self.state else {
            return Step::NeedMore;
        };
        let buf = &mut self.buf;
        let d = b.dialect;
        if !matches!(b.phase, Phase::Value(..)) {
            let ws = buf.len() - buf.trim_start().len();
            if ws > 0 {
                Self::consume(buf, b, ws);
            }
            if buf.is_empty() {
                return Step::NeedMore;
            }
        }
        // The phase is taken out and put back by every branch that keeps it.
        match std::mem::replace(&mut b.phase, Phase::BetweenInvokes) {
            Phase::BetweenInvokes => {
                let close = match_close(buf, d, "tool_calls").map(|n| (n, None));
                let open = match_invoke_open(buf, d).map(|(n, name)| (n, Some(name)));
                match first_hit([close, open]) {
                    Alt::Hit((n, None)) => {
                        Self::consume(buf, b, n);
                        Step::Closed
                    }
                    Alt::Hit((n, Some(name))) => {
                        Self::consume(buf, b, n);
                        let index = self.next_index;
                        self.next_index += 1;
                        b.started = true;
                        out.push(Event::ToolCallStart {
                            index,
                            name: name.clone(),
                        });
                        b.phase = Phase::InInvoke(CallBuilder {
                            index,
                            name,
                            arguments: Map::new(),
                            json: String::new(),
                        });
                        Step::Progress
                    }
                    Alt::More => Step::NeedMore,
                    Alt::Bad => Step::Abort,
                }
            }
            Phase::InInvoke(mut call) => {
                let close = match_close(buf, d, "invoke").map(|n| (n, None));
                let open = match_param_open(buf, d).map(|(n, k, s)| (n, Some((k, s))));
                match first_hit([close, open]) {
                    Alt::Hit((n, None)) => {
                        Self::consume(buf, b, n);
                        let tail = if call.json.is_empty() { "{}" } else { "}" };
                        call.json.push_str(tail);
                        push_event(
                            out,
                            Event::ToolCallArgs {
                                index: call.index,
                                delta: tail.to_owned(),
                            },
                        );
                        out.push(Event::ToolCallEnd {
                            index: call.index,
                            call: ParsedToolCall {
                                name: call.name,
                                arguments: call.arguments,
                                arguments_json: call.json,
                            },
                        });
                        Step::Progress
                    }
                    Alt::Hit((n, Some((name, is_string)))) => {
                        // The official decoder rejects a repeated parameter name.
                        if call.arguments.contains_key(&name) {
                            b.phase = Phase::InInvoke(call);
                            return Step::Abort;
                        }
                        Self::consume(buf, b, n);
                        let mut delta = String::from(if call.json.is_empty() { "{" } else { ", " });
                        delta.push_str(&pyjson::dumps_str(&name));
                        delta.push_str(": ");
                        if is_string {
                            delta.push('"');
                        }
                        call.json.push_str(&delta);
                        push_event(
                            out,
                            Event::ToolCallArgs {
                                index: call.index,
                                delta,
                            },
                        );
                        b.phase = Phase::Value(
                            call,
                            ParamBuilder {
                                name,
                                is_string,
                                json: String::new(),
                                string: String::new(),
                                json_in_str: false,
                                json_escape: false,
                                json_stack: Vec::new(),
                                json_expect_key: false,
                                json_str_is_key: false,
                            },
                        );
                        Step::Progress
                    }
                    Alt::More => {
                        b.phase = Phase::InInvoke(call);
                        Step::NeedMore
                    }
                    Alt::Bad => {
                        b.phase = Phase::InInvoke(call);
                        Step::Abort
                    }
                }
            }
            Phase::Value(mut call, mut param) => {
                let close_tag = format!("</{}parameter>", d.prefix());
                let close_name = &close_tag[..close_tag.len() - 1];
                // The value ends at the first `</P parameter`, as in the official
                // decoder; that tag must then be closed by `>`.
                enum End {
                    Open,
                    Held(usize),
                    Closed(usize),
                    Bad(usize),
                }
                let mut end = End::Open;
                for (i, ch) in buf.char_indices() {
                    if ch != '<' {
                        continue;
                    }
                    let rest = &buf[i..];
                    if rest.starts_with(close_tag.as_str()) {
                        end = End::Closed(i);
                        break;
                    }
                    if rest.starts_with(close_name) && rest.len() > close_name.len() {
                        end = End::Bad(i);
                        break;
                    }
                    if close_tag.starts_with(rest) {
                        end = End::Held(i);
                        break;
                    }
                }
                let upto = match end {
                    End::Open => buf.len(),
                    End::Held(i) | End::Closed(i) | End::Bad(i) => i,
                };
                if upto > 0 {
                    let piece = &buf[..upto];
                    if param.is_string {
                        param.string.push_str(piece);
                        let mut delta = String::new();
                        pyjson::escape_str_into(&mut delta, piece);
                        call.json.push_str(&delta);
                        push_event(
                            out,
                            Event::ToolCallArgs {
                                index: call.index,
                                delta,
                            },
                        );
                    } else {
                        for c in piece.chars() {
                            param.lex(c);
                        }
                        param.json.push_str(piece);
                    }
                    Self::consume(buf, b, upto);
                }
                match end {
                    End::Open | End::Held(_) => {
                        b.phase = Phase::Value(call, param);
                        if upto > 0 {
                            Step::Progress
                        } else {
                            Step::NeedMore
                        }
                    }
                    End::Bad(_) => {
                        b.phase = Phase::Value(call, param);
                        Step::Abort
                    }
                    End::Closed(_) => {
                        let (delta, value) = if param.is_string {
                            ("\"".to_owned(), Value::String(param.string))
                        } else {
                            match serde_json::from_str::<Value>(&param.json) {
                                Ok(v) => (param.json, v),
                                // Invalid JSON keeps its text, as a string.
                                Err(_) => {
                                    (pyjson::dumps_str(&param.json), Value::String(param.json))
                                }
                            }
                        };
                        call.json.push_str(&delta);
                        push_event(
                            out,
                            Event::ToolCallArgs {
                                index: call.index,
                                delta,
                            },
                        );
                        call.arguments.insert(param.name, value);
                        Self::consume(buf, b, close_tag.len());
                        b.phase = Phase::InInvoke(call);
                        Step::Progress
                    }
                }
            }
        }
    }
}

/// A whole completion, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParsedCompletion {
    pub reasoning: String,
    /// Visible text; the text of malformed blocks is included here.
    pub content: String,
    pub tool_calls: Vec<ParsedToolCall>,
    /// A block's closing tag was seen.
    pub tool_calls_done: bool,
}

/// Parse a complete generated text (the non-streaming path): the same machine as
/// the streaming parser; calls of an aborted block are dropped and its raw text
/// becomes content, as ds4 returns malformed blocks as plain text.
pub fn parse_completion(text: &str, opts: ParserOptions) -> ParsedCompletion {
    let mut p = DsmlParser::new(opts);
    let mut events = p.feed(text);
    events.extend(p.finish());
    let mut r = ParsedCompletion::default();
    let mut calls: Vec<(usize, ParsedToolCall)> = Vec::new();
    for ev in events {
        match ev {
            Event::Reasoning(s) => r.reasoning.push_str(&s),
            Event::Text(s) => r.content.push_str(&s),
            Event::ToolCallEnd { index, call } => calls.push((index, call)),
            Event::ToolCallsDone => r.tool_calls_done = true,
            Event::ToolCallsAborted { raw, first_index } => {
                calls.retain(|(i, _)| *i < first_index);
                r.content.push_str(&raw);
            }
            Event::ToolCallStart { .. } | Event::ToolCallArgs { .. } | Event::End => {}
        }
    }
    r.tool_calls = calls.into_iter().map(|(_, c)| c).collect();
    r
}
