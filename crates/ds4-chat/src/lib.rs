//! DeepSeek V4 chat encoding and DSML tool-call parsing, at the text level.
//!
//! * [`encode_messages`] renders a conversation exactly as the official
//!   `encoding_dsv4.py` does, as [`Segment`]s that tell encoder-written control
//!   tokens apart from client text (so the tokenizer can refuse role-token
//!   injection); [`Prompt::render_to_string`] gives the official string.
//! * [`DsmlParser`] turns generated text, fed in arbitrary pieces, into reasoning,
//!   visible text and streamed tool calls.
//!
//! This crate does not tokenize; see `ds4-tokenizer`. Choices that differ from ds4's
//! renderer are listed in `ENCODING.md`.

pub mod dsml;
pub mod encode;
pub mod pyjson;
pub mod segments;
pub mod types;

pub use dsml::{
    DsmlParser, Event, ParsedCompletion, ParsedToolCall, ParserOptions, parse_completion,
};
pub use encode::{
    EncodeError, EncodeOptions, REASONING_EFFORT_MAX_PREFIX, ToolSchemaError, encode_messages,
    encode_single_turn, render_to_string, render_tool_calls, render_tools,
};
pub use segments::{Prompt, Segment, SpecialToken, Task};
pub use types::{
    ApiEffort, Arguments, Content, ContentPart, FunctionCall, Message, RawJson, ReasoningEffort,
    Role, THINK_MAX_MIN_CONTEXT, ThinkingMode, Tool, ToolCall, UnknownEffort,
};
