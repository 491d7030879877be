//! The interactive chat (`ds4` with no prompt). The transcript is kept at the
//! token level, as ds4 does: `BOS [max prefix] system`, then per turn
//! `<｜User｜>text<｜Assistant｜><think>|</think>…generated…EOS`, so each turn
//! only prefills what is new. Unlike the server, the REPL keeps earlier
//! reasoning in the transcript.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use ds4_chat::REASONING_EFFORT_MAX_PREFIX;
use ds4_engine::{ForwardOptions, Model, Sampler, SamplingParams, Session};
use ds4_tokenizer::{Piece, Tokenizer};
use rustyline::DefaultEditor;
use rustyline::config::Configurer;
use rustyline::error::ReadlineError;

use crate::args::Args;
use crate::generate::{Printer, next_token, prefill, resolve_model, sampling, tokenizer_from_gguf};
use crate::tokens::DEFAULT_SYSTEM;

const HELP: &str = "commands: /help  /think  /think-max  /nothink  /ctx N  /read FILE  /quit\n\
                    Ctrl+C stops a generation; Ctrl+D or /quit leaves.";
const HISTORY_MAX: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    NoThink,
    Think,
    ThinkMax,
}

struct Chat<'m> {
    model: &'m Model,
    tok: Tokenizer,
    session: Session<'m>,
    ctx: usize,
    mode: Mode,
    /// Token transcript of the whole conversation.
    transcript: Vec<u32>,
    /// Length of the `BOS [max prefix] system` head.
    head_len: usize,
    system: String,
}

impl<'m> Chat<'m> {
    fn head(&self) -> Result<Vec<u32>> {
        let mut pieces = vec![Piece::Special(self.tok.bos())];
        if self.mode == Mode::ThinkMax {
            pieces.push(Piece::Text(REASONING_EFFORT_MAX_PREFIX));
        }
        pieces.push(Piece::Text(&self.system));
        Ok(self.tok.encode_pieces(&pieces)?)
    }

    /// Replaces the head (think-max toggles the prefix at index 1); the KV is
    /// reused up to the first changed token by the next sync.
    fn rebuild_head(&mut self) -> Result<()> {
        let head = self.head()?;
        self.transcript
            .splice(..self.head_len, head.iter().copied());
        self.head_len = head.len();
        Ok(())
    }

    fn set_ctx(&mut self, ctx: usize) {
        // A new session: the KV is dropped, the transcript kept, so the next
        // turn re-prefills it.
        self.ctx = ctx;
        self.session = Session::new(self.model, ctx, ForwardOptions::default());
    }

    fn turn(&mut self, args: &Args, text: &str, stop: &AtomicBool) -> Result<()> {
        let sp = self.tok.specials();
        let rollback = self.transcript.len();
        let mut user = vec![
            Piece::Special(sp.user),
            Piece::Text(text),
            Piece::Special(sp.assistant),
        ];
        user.push(Piece::Special(if self.mode == Mode::NoThink {
            sp.think_end
        } else {
            sp.think_start
        }));
        self.transcript.extend(self.tok.encode_pieces(&user)?);
        if self.transcript.len() + 1 >= self.ctx {
            self.transcript.truncate(rollback);
            anyhow::bail!(
                "the conversation no longer fits the context ({}); use /ctx N",
                self.ctx
            );
        }
        stop.store(false, Ordering::SeqCst);
        let t0 = Instant::now();
        let evaluated = match prefill(&mut self.session, &self.transcript, 2048) {
            Ok(n) => n,
            Err(e) => {
                self.transcript.truncate(rollback);
                return Err(e);
            }
        };
        let prefill_s = t0.elapsed().as_secs_f64();
        let params = sampling(args);
        // A fresh stream per turn, still fixed by --seed.
        let mut sampler = Sampler::new(SamplingParams {
            seed: params.seed.wrapping_add(self.transcript.len() as u64),
            ..params
        });
        let mut printer = Printer::new(self.mode != Mode::NoThink);
        let mut decoder = self.tok.stream_decoder();
        let mut out = std::io::stdout().lock();
        let budget = (args.tokens as usize).min(self.ctx - self.transcript.len() - 1);
        let t1 = Instant::now();
        let mut produced = 0usize;
        let mut next = next_token(&mut sampler, self.session.logits()?)?;
        loop {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            self.transcript.push(next);
            produced += 1;
            if next == sp.eos {
                break;
            }
            if next == sp.think_end {
                printer.think_end(&mut out)?;
            } else if next == sp.think_start {
                printer.think_start();
            } else {
                printer.text(&mut out, &decoder.push(&self.tok, next)?)?;
            }
            if produced >= budget {
                break;
            }
            next = next_token(&mut sampler, self.session.decode(next)?)?;
        }
        printer.text(&mut out, &decoder.finish())?;
        printer.think_end(&mut out)?;
        writeln!(out)?;
        let interrupted = stop.swap(false, Ordering::SeqCst);
        if interrupted && produced == 0 {
            // Nothing was said: forget the turn as if it never happened.
            self.transcript.truncate(rollback);
            writeln!(out, "[interrupted]")?;
        } else if self.transcript.last() != Some(&sp.eos) {
            // Close the turn so the next user message follows a finished reply.
            self.transcript.push(sp.eos);
            if interrupted {
                writeln!(out, "[interrupted]")?;
            }
        }
        eprintln!(
            "ds4: prefill: {:.2} t/s, generation: {:.2} t/s ({evaluated} new prompt tokens, {produced} generated, {}/{} context)",
            evaluated as f64 / prefill_s.max(1e-9),
            produced as f64 / t1.elapsed().as_secs_f64().max(1e-9),
            self.transcript.len(),
            self.ctx
        );
        Ok(())
    }
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".ds4_history"))
}

pub fn run(args: &Args) -> Result<()> {
    let path = resolve_model(args)?;
    let model = crate::generate::open_model(&path)?;
    let ctx = args.ctx as usize;
    crate::memory::check_fits(&model.cfg, ctx)?;
    let tok = tokenizer_from_gguf(&path)?;
    let mode = if args.nothink {
        Mode::NoThink
    } else if args.think_max {
        Mode::ThinkMax
    } else {
        Mode::Think
    };
    let mut chat = Chat {
        model: &model,
        session: Session::new(&model, ctx, ForwardOptions::default()),
        tok,
        ctx,
        mode,
        transcript: Vec::new(),
        head_len: 0,
        system: args
            .system
            .clone()
            .unwrap_or_else(|| DEFAULT_SYSTEM.to_string()),
    };
    chat.rebuild_head()?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // While a reply is generated the terminal is in cooked mode and Ctrl+C
        // arrives as SIGINT; at the prompt rustyline reads it as a key instead.
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl+C handler")?;
    }
    let mut rl = DefaultEditor::new().context("starting the line editor")?;
    rl.set_max_history_size(HISTORY_MAX).ok();
    let history = history_path();
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!("{HELP}");
    loop {
        let line = match rl.readline("ds4> ") {
            Ok(l) => l,
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading input"),
        };
        let line = line.trim_end_matches(['\r', '\n']);
        if line.trim().is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(line);
        let (cmd, rest) = match line.split_once(' ') {
            Some((c, r)) => (c, r.trim()),
            None => (line, ""),
        };
        let result = match cmd {
            "/quit" | "/exit" => break,
            "/help" => {
                println!("{HELP}");
                Ok(())
            }
            "/think" | "/nothink" | "/think-max" => {
                let was_max = chat.mode == Mode::ThinkMax;
                chat.mode = match cmd {
                    "/think" => Mode::Think,
                    "/nothink" => Mode::NoThink,
                    _ => Mode::ThinkMax,
                };
                match chat.mode {
                    Mode::NoThink => println!("Thinking mode: off"),
                    Mode::Think => println!("Thinking mode: high"),
                    Mode::ThinkMax => println!("Thinking mode: max"),
                }
                if was_max != (chat.mode == Mode::ThinkMax) {
                    chat.rebuild_head()
                } else {
                    Ok(())
                }
            }
            "/ctx" => match rest.parse::<usize>() {
                Ok(n) if n > chat.transcript.len() + 1 => {
                    chat.set_ctx(n);
                    println!("Context: {n} tokens (the conversation is re-read on the next turn)");
                    Ok(())
                }
                Ok(n) => Err(anyhow::anyhow!(
                    "/ctx {n} is too small for the conversation so far ({} tokens)",
                    chat.transcript.len()
                )),
                Err(_) => Err(anyhow::anyhow!(
                    "usage: /ctx N (a positive number of tokens)"
                )),
            },
            "/read" => match std::fs::read_to_string(rest) {
                Ok(text) => chat.turn(args, &text, &stop),
                Err(e) => Err(anyhow::anyhow!("cannot read {rest}: {e}")),
            },
            c if c.starts_with('/') => {
                println!("unknown command {c} (try /help)");
                Ok(())
            }
            _ => chat.turn(args, line, &stop),
        };
        if let Err(e) = result {
            eprintln!("ds4: {e:#}");
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(())
}
