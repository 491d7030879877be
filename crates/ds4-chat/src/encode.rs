//! `encode_messages` of the official `encoding_dsv4.py`, byte for byte.
//!
//! The pipeline is the official one: merge tool messages into user turns, order
//! tool results by call order, decide whether old reasoning is dropped, drop it,
//! then render each message and the transition that follows it.

use crate::pyjson::{self, PyValue};
use crate::segments::{Prompt, SpecialToken, Task};
use crate::types::{Content, Message, ReasoningEffort, Role, ThinkingMode, Tool, ToolCall};

/// The Think-Max prefix (`REASONING_EFFORT_MAX`, identical to ds4's
/// `DS4_REASONING_EFFORT_MAX_PREFIX`), placed right after BOS.
pub const REASONING_EFFORT_MAX_PREFIX: &str = "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n\
You MUST be very thorough in your thinking and comprehensively decompose the problem to resolve the root cause, rigorously stress-testing your logic against all potential paths, edge cases, and adversarial scenarios.\n\
Explicitly write out your entire deliberation process, documenting every intermediate step, considered alternative, and rejected hypothesis to ensure absolutely no assumption is left unchecked.\n\n";

/// `TOOLS_TEMPLATE` before the schemas. Written with the special tokens inline;
/// [`Prompt::push_template`] turns them into special segments.
const TOOLS_HEAD: &str = "## Tools\n\n\
You have access to a set of tools to help answer the user's question. You can invoke tools by writing a \"<｜DSML｜tool_calls>\" block like the following:\n\n\
<｜DSML｜tool_calls>\n\
<｜DSML｜invoke name=\"$TOOL_NAME\">\n\
<｜DSML｜parameter name=\"$PARAMETER_NAME\" string=\"true|false\">$PARAMETER_VALUE</｜DSML｜parameter>\n\
...\n\
</｜DSML｜invoke>\n\
<｜DSML｜invoke name=\"$TOOL_NAME2\">\n\
...\n\
</｜DSML｜invoke>\n\
</｜DSML｜tool_calls>\n\n\
String parameters should be specified as is and set `string=\"true\"`. For all other types (numbers, booleans, arrays, objects), pass the value in JSON format and set `string=\"false\"`.\n\n\
If thinking_mode is enabled (triggered by <think>), you MUST output your complete reasoning inside <think>...</think> BEFORE any tool calls or final response.\n\n\
Otherwise, output directly after </think> with tool calls or final response.\n\n\
### Available Tool Schemas\n\n";

/// `TOOLS_TEMPLATE` after the schemas; the template ends with a newline.
const TOOLS_TAIL: &str = "\n\nYou MUST strictly follow the above defined tool name and parameter schemas to invoke tool calls.\n";

const RESPONSE_FORMAT_HEAD: &str =
    "## Response Format:\n\nYou MUST strictly adhere to the following schema to reply:\n";

/// Why a conversation cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// `index` is the message's position in its input slice (`messages`, or
    /// `context` for a context message).
    #[error("message {index}: a developer message must have non-empty content")]
    EmptyDeveloperContent { index: usize },
    #[error("message {index}: tool {tool} has a function that is not valid JSON: {source}")]
    InvalidToolSchema {
        index: usize,
        tool: usize,
        source: pyjson::PyJsonError,
    },
    #[error("message {index}: response_format is not valid JSON: {source}")]
    InvalidResponseFormat {
        index: usize,
        source: pyjson::PyJsonError,
    },
}

/// Options of the official `encode_messages`.
#[derive(Debug, Clone, Copy)]
pub struct EncodeOptions<'a> {
    pub thinking_mode: ThinkingMode,
    /// Drop reasoning of assistant turns before the last user turn. Ignored (treated
    /// as false) when any message carries tools.
    pub drop_thinking: bool,
    /// Start with BOS (only when `context` is empty).
    pub add_bos: bool,
    /// `None` and `High` render the same; `Max` adds the prefix in thinking mode.
    /// Apply [`ReasoningEffort::gate_for_context`] before passing it.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Messages already encoded earlier (the official `context`): they shape the
    /// rendering of `messages` but are not rendered themselves.
    pub context: &'a [Message],
}

impl Default for EncodeOptions<'_> {
    fn default() -> Self {
        Self {
            thinking_mode: ThinkingMode::Thinking,
            drop_thinking: true,
            add_bos: true,
            reasoning_effort: None,
            context: &[],
        }
    }
}

impl EncodeOptions<'_> {
    pub fn chat() -> Self {
        Self {
            thinking_mode: ThinkingMode::Chat,
            ..Self::default()
        }
    }

    pub fn thinking() -> Self {
        Self::default()
    }
}

/// A content block of a merged user turn.
#[derive(Debug, Clone)]
enum Block<'a> {
    Text(Option<&'a Content>),
    ToolResult {
        id: &'a str,
        content: Option<&'a Content>,
    },
}

/// A message after `merge_tool_messages`. User turns always carry blocks; every other
/// role keeps a reference to its source message.
#[derive(Debug, Clone)]
struct Turn<'a> {
    /// Index of the message that opened this turn in its input slice (for errors).
    origin: usize,
    role: Role,
    msg: Option<&'a Message>,
    blocks: Vec<Block<'a>>,
    task: Option<Task>,
    wo_eos: bool,
    /// Set by `_drop_thinking_messages` (recorded for fidelity; rendering of an
    /// assistant before the last user turn already omits reasoning).
    reasoning_dropped: bool,
}

impl Turn<'_> {
    /// The official check runs on merged messages, where user turns no longer carry
    /// `tools`.
    fn has_tools(&self) -> bool {
        self.role != Role::User
            && self
                .msg
                .and_then(|m| m.tools.as_ref())
                .is_some_and(|t| !t.is_empty())
    }
}

/// `merge_tool_messages`: tool results become `tool_result` blocks of a user turn;
/// consecutive results share one turn; a user message directly after a user turn
/// (tool results or not) is appended to it as a text block unless that turn has a
/// task. A newly created user turn keeps only content, task and wo_eos, as the
/// official code does.
fn merge_tool_messages(messages: &[Message]) -> Vec<Turn<'_>> {
    let mut merged: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    for (origin, m) in messages.iter().enumerate() {
        match m.role {
            Role::Tool => {
                let block = Block::ToolResult {
                    id: m.tool_call_id.as_deref().unwrap_or(""),
                    content: m.content.as_ref(),
                };
                match merged.last_mut() {
                    Some(last) if last.role == Role::User => last.blocks.push(block),
                    _ => merged.push(Turn {
                        origin,
                        role: Role::User,
                        msg: None,
                        blocks: vec![block],
                        task: None,
                        wo_eos: false,
                        reasoning_dropped: false,
                    }),
                }
            }
            Role::User => {
                let block = Block::Text(m.content.as_ref());
                match merged.last_mut() {
                    Some(last) if last.role == Role::User && last.task.is_none() => {
                        last.blocks.push(block)
                    }
                    _ => merged.push(Turn {
                        origin,
                        role: Role::User,
                        msg: Some(m),
                        blocks: vec![block],
                        task: m.task,
                        wo_eos: m.wo_eos,
                        reasoning_dropped: false,
                    }),
                }
            }
            _ => merged.push(Turn {
                origin,
                role: m.role,
                msg: Some(m),
                blocks: Vec::new(),
                task: m.task,
                wo_eos: m.wo_eos,
                reasoning_dropped: false,
            }),
        }
    }
    merged
}

/// The call-id order of the last assistant message with tool calls.
fn call_order(calls: &[ToolCall]) -> Vec<(&str, usize)> {
    calls
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            c.id.as_deref()
                .filter(|id| !id.is_empty())
                .map(|id| (id, i))
        })
        .collect()
}

/// `sort_tool_results_by_call_order`: within each user turn with more than one tool
/// result, the results are stably sorted by the position of their id among the
/// preceding assistant's calls (unknown ids sort as position 0), staying in the slots
/// tool results occupied.
fn sort_tool_results<'a>(turns: &mut [Turn<'a>], mut order: Vec<(&'a str, usize)>) {
    for t in turns.iter_mut() {
        match t.role {
            Role::Assistant => {
                if let Some(calls) = t.msg.and_then(|m| m.tool_calls.as_ref())
                    && !calls.is_empty()
                {
                    order = call_order(calls);
                }
            }
            Role::User => {
                let results: Vec<Block<'a>> = t
                    .blocks
                    .iter()
                    .filter(|b| matches!(b, Block::ToolResult { .. }))
                    .cloned()
                    .collect();
                if results.len() > 1 && !order.is_empty() {
                    let pos = |b: &Block<'_>| match b {
                        Block::ToolResult { id, .. } => order
                            .iter()
                            .find(|(oid, _)| oid == id)
                            .map_or(0, |(_, i)| *i),
                        Block::Text(_) => 0,
                    };
                    let mut sorted = results;
                    sorted.sort_by_key(pos);
                    let mut it = sorted.into_iter();
                    for b in t.blocks.iter_mut() {
                        if matches!(b, Block::ToolResult { .. })
                            && let Some(next) = it.next()
                        {
                            *b = next;
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The call order left by the raw (unmerged) context: the official code sorts
/// `context + messages` with the context still unmerged, so only its assistants
/// matter.
fn context_call_order(context: &[Message]) -> Vec<(&str, usize)> {
    context
        .iter()
        .rev()
        .find_map(|m| {
            (m.role == Role::Assistant)
                .then_some(m.tool_calls.as_ref())
                .flatten()
                .filter(|c| !c.is_empty())
                .map(|c| call_order(c))
        })
        .unwrap_or_default()
}

/// Index of the last user or developer turn, or -1.
fn last_user_index(turns: &[Turn<'_>]) -> isize {
    turns
        .iter()
        .rposition(|t| matches!(t.role, Role::User | Role::Developer))
        .map_or(-1, |i| i as isize)
}

/// `_drop_thinking_messages`: before the last user turn, assistants lose their
/// reasoning and developer turns disappear entirely.
fn drop_thinking_turns<'a>(turns: &[Turn<'a>]) -> Vec<Turn<'a>> {
    let last_user = last_user_index(turns);
    let mut out = Vec::with_capacity(turns.len());
    for (i, t) in turns.iter().enumerate() {
        let kept_role = matches!(t.role, Role::User | Role::System | Role::LatestReminder);
        if kept_role || i as isize >= last_user {
            out.push(t.clone());
        } else if t.role == Role::Assistant {
            out.push(Turn {
                reasoning_dropped: true,
                ..t.clone()
            });
        }
    }
    out
}

fn content_str(c: Option<&Content>) -> std::borrow::Cow<'_, str> {
    c.map_or("".into(), Content::flatten)
}

/// A tool whose function object Python's `json.loads` would reject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tool {tool}: function is not valid JSON: {source}")]
pub struct ToolSchemaError {
    pub tool: usize,
    pub source: pyjson::PyJsonError,
}

/// `render_tools`: the tool prompt with one Python-serialized schema per line.
pub fn render_tools(tools: &[Tool]) -> Result<Prompt, ToolSchemaError> {
    let mut p = Prompt::new();
    p.push_template(TOOLS_HEAD);
    for (i, t) in tools.iter().enumerate() {
        let v = pyjson::loads(t.function.get())
            .map_err(|source| ToolSchemaError { tool: i, source })?;
        if i > 0 {
            p.push_text("\n");
        }
        p.push_text(&pyjson::dumps(&v));
    }
    p.push_template(TOOLS_TAIL);
    Ok(p)
}

/// The DSML block of an assistant message's tool calls, without the leading
/// `"\n\n"` (`tool_calls_template`). Names and values are written unescaped, as the
/// official encoder does.
pub fn render_tool_calls(calls: &[ToolCall]) -> Prompt {
    let mut p = Prompt::new();
    p.push_template("<｜DSML｜tool_calls>\n");
    for (i, call) in calls.iter().enumerate() {
        if i > 0 {
            p.push_text("\n");
        }
        p.push_template("<｜DSML｜invoke name=\"");
        p.push_text(&call.function.name);
        p.push_text("\">\n");
        render_arguments(&mut p, &call.function.arguments.0);
        p.push_template("\n</｜DSML｜invoke>");
    }
    p.push_template("\n</｜DSML｜tool_calls>");
    p
}

/// `encode_arguments_to_dsml`: each top-level key of the JSON-decoded arguments
/// becomes a parameter; strings are written raw with `string="true"`, anything else
/// as Python JSON with `string="false"`. Arguments that do not decode (or, where
/// the official code would crash, decode to something other than an object) become
/// one `arguments` string parameter holding the raw text.
fn render_arguments(p: &mut Prompt, arguments: &str) {
    let params = match pyjson::loads(arguments) {
        Ok(PyValue::Object(members)) => members,
        _ => vec![("arguments".to_owned(), PyValue::Str(arguments.to_owned()))],
    };
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            p.push_text("\n");
        }
        p.push_template("<｜DSML｜parameter name=\"");
        p.push_text(k);
        match v {
            PyValue::Str(s) => {
                p.push_text("\" string=\"true\">");
                p.push_text(s);
            }
            other => {
                p.push_text("\" string=\"false\">");
                p.push_text(&pyjson::dumps(other));
            }
        }
        p.push_template("</｜DSML｜parameter>");
    }
}

/// Append `"\n\n" + render_tools(...)` and the response-format section.
fn render_suffixes(p: &mut Prompt, index: usize, msg: &Message) -> Result<(), EncodeError> {
    if let Some(tools) = msg.tools.as_ref().filter(|t| !t.is_empty()) {
        let rendered = render_tools(tools).map_err(|ToolSchemaError { tool, source }| {
            EncodeError::InvalidToolSchema {
                index,
                tool,
                source,
            }
        })?;
        p.push_text("\n\n");
        p.append(rendered);
    }
    if let Some(rf) = &msg.response_format {
        let v = pyjson::loads(rf.get())
            .map_err(|source| EncodeError::InvalidResponseFormat { index, source })?;
        // Python's truthiness: an empty object/array/string or null/false/0 means no
        // response format.
        let truthy = match &v {
            PyValue::Null => false,
            PyValue::Bool(b) => *b,
            PyValue::Int(d) => d != "0",
            PyValue::Float(f) => *f != 0.0,
            PyValue::Str(s) => !s.is_empty(),
            PyValue::Array(a) => !a.is_empty(),
            PyValue::Object(o) => !o.is_empty(),
        };
        if truthy {
            p.push_text("\n\n");
            p.push_text(RESPONSE_FORMAT_HEAD);
            p.push_text(&pyjson::dumps(&v));
        }
    }
    Ok(())
}

struct RenderCtx<'t, 'a> {
    turns: &'t [Turn<'a>],
    thinking: bool,
    drop_thinking: bool,
    effort: Option<ReasoningEffort>,
    last_user: isize,
}

/// `render_message(index, ...)`.
fn render_turn(p: &mut Prompt, cx: &RenderCtx<'_, '_>, index: usize) -> Result<(), EncodeError> {
    let t = &cx.turns[index];
    let src_index = t.origin;
    if index == 0 && cx.thinking && cx.effort == Some(ReasoningEffort::Max) {
        p.push_text(REASONING_EFFORT_MAX_PREFIX);
    }
    match t.role {
        Role::System => {
            if let Some(m) = t.msg {
                p.push_text(&content_str(m.content.as_ref()));
                render_suffixes(p, src_index, m)?;
            }
        }
        Role::Developer => {
            if let Some(m) = t.msg {
                let content = content_str(m.content.as_ref());
                if content.is_empty() {
                    return Err(EncodeError::EmptyDeveloperContent { index: src_index });
                }
                p.push_special(SpecialToken::User);
                p.push_text(&content);
                render_suffixes(p, src_index, m)?;
            }
        }
        Role::User => {
            p.push_special(SpecialToken::User);
            for (i, b) in t.blocks.iter().enumerate() {
                if i > 0 {
                    p.push_text("\n\n");
                }
                match b {
                    Block::Text(c) => p.push_text(&content_str(*c)),
                    Block::ToolResult { content, .. } => {
                        p.push_text("<tool_result>");
                        p.push_text(&content_str(*content));
                        p.push_text("</tool_result>");
                    }
                }
            }
        }
        Role::LatestReminder => {
            p.push_special(SpecialToken::LatestReminder);
            p.push_text(&content_str(t.msg.and_then(|m| m.content.as_ref())));
        }
        Role::Assistant => {
            let m = t.msg;
            let prev_has_task = index > 0 && cx.turns[index - 1].task.is_some();
            if cx.thinking && !prev_has_task && (!cx.drop_thinking || index as isize > cx.last_user)
            {
                if !t.reasoning_dropped {
                    p.push_text(m.and_then(|m| m.reasoning_content.as_deref()).unwrap_or(""));
                }
                p.push_special(SpecialToken::ThinkEnd);
            }
            p.push_text(&content_str(m.and_then(|m| m.content.as_ref())));
            if let Some(calls) = m
                .and_then(|m| m.tool_calls.as_ref())
                .filter(|c| !c.is_empty())
            {
                p.push_text("\n\n");
                p.append(render_tool_calls(calls));
            }
            if !t.wo_eos {
                p.push_special(SpecialToken::Eos);
            }
        }
        // Tool messages never survive merging.
        Role::Tool => {}
    }

    // The transition into the next turn: only before an assistant or latest_reminder
    // turn, or at the end of the conversation.
    if let Some(next) = cx.turns.get(index + 1)
        && !matches!(next.role, Role::Assistant | Role::LatestReminder)
    {
        return Ok(());
    }
    if let Some(task) = t.task {
        if task == Task::Action {
            p.push_special(SpecialToken::Assistant);
            p.push_special(if cx.thinking {
                SpecialToken::ThinkStart
            } else {
                SpecialToken::ThinkEnd
            });
        }
        p.push_special(SpecialToken::Task(task));
    } else if matches!(t.role, Role::User | Role::Developer) {
        p.push_special(SpecialToken::Assistant);
        let open_thinking = cx.thinking && (!cx.drop_thinking || index as isize >= cx.last_user);
        p.push_special(if open_thinking {
            SpecialToken::ThinkStart
        } else {
            SpecialToken::ThinkEnd
        });
    }
    Ok(())
}

/// Encode a conversation exactly as the official `encode_messages` does, as segments.
pub fn encode_messages(
    messages: &[Message],
    opts: &EncodeOptions<'_>,
) -> Result<Prompt, EncodeError> {
    let thinking = opts.thinking_mode == ThinkingMode::Thinking;

    let mut turns = merge_tool_messages(messages);
    sort_tool_results(&mut turns, context_call_order(opts.context));
    let mut ctx_turns = merge_tool_messages(opts.context);
    sort_tool_results(&mut ctx_turns, Vec::new());
    let ctx_len_raw = ctx_turns.len();
    let n_messages = turns.len();
    let mut full = ctx_turns;
    full.extend(turns);

    let mut p = Prompt::new();
    if opts.add_bos && opts.context.is_empty() {
        p.push_special(SpecialToken::Bos);
    }

    // Tools anywhere keep every turn's reasoning.
    let drop_thinking = opts.drop_thinking && !full.iter().any(Turn::has_tools);

    let (full, context_len) = if thinking && drop_thinking {
        let dropped = drop_thinking_turns(&full);
        let ctx_dropped = drop_thinking_turns(&full[..ctx_len_raw]).len();
        let num_to_render = dropped.len() - ctx_dropped.min(dropped.len());
        let context_len = dropped.len() - num_to_render;
        (dropped, context_len)
    } else {
        let context_len = full.len() - n_messages;
        (full, context_len)
    };

    let cx = RenderCtx {
        turns: &full,
        thinking,
        drop_thinking,
        effort: opts.reasoning_effort,
        last_user: last_user_index(&full),
    };
    for index in context_len..full.len() {
        render_turn(&mut p, &cx, index)?;
    }
    Ok(p)
}

/// [`encode_messages`] concatenated into one string: the official output, and the
/// disk-cache key text.
pub fn render_to_string(
    messages: &[Message],
    opts: &EncodeOptions<'_>,
) -> Result<String, EncodeError> {
    encode_messages(messages, opts).map(|p| p.render_to_string())
}

/// The single-turn prompt of ds4's CLI (`encode_chat_prompt`): BOS, the Think-Max
/// prefix when asked for in thinking mode, the system text if any, then
/// `<｜User｜>prompt<｜Assistant｜>` and `<think>` or `</think>`. This is exactly
/// [`encode_messages`] of `[system, user]`.
pub fn encode_single_turn(
    system: Option<&str>,
    prompt: &str,
    thinking_mode: ThinkingMode,
    reasoning_effort: Option<ReasoningEffort>,
) -> Prompt {
    let mut p = Prompt::new();
    p.push_special(SpecialToken::Bos);
    if thinking_mode == ThinkingMode::Thinking && reasoning_effort == Some(ReasoningEffort::Max) {
        p.push_text(REASONING_EFFORT_MAX_PREFIX);
    }
    p.push_text(system.unwrap_or(""));
    p.push_special(SpecialToken::User);
    p.push_text(prompt);
    p.push_special(SpecialToken::Assistant);
    p.push_special(match thinking_mode {
        ThinkingMode::Thinking => SpecialToken::ThinkStart,
        ThinkingMode::Chat => SpecialToken::ThinkEnd,
    });
    p
}
