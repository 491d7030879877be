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

const HELP: &str = "commands: /help  /think  /think-max  /nothink  /ctx N  /read FILE  /save FILE  /load FILE  /quit\n\
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

    /// The identity saved conversations are checked against (the server's
    /// disk cache uses the same digest).
    fn identity(&self) -> ds4_kvstore::Identity {
        ds4_kvstore::Identity {
            model: ds4_kvstore::sha256(&ds4_engine::payload::model_fingerprint(self.model)),
            quant_bits: 0,
        }
    }

    /// `/save FILE`: the conversation and its KV state in the disk cache's
    /// file format (ds4-kvstore FORMAT.md), written atomically.
    fn save(&mut self, path: &str) -> Result<()> {
        if path.is_empty() {
            anyhow::bail!("usage: /save FILE");
        }
        if self.transcript.len() <= self.head_len {
            anyhow::bail!("nothing to save yet");
        }
        // The last sampled token (or the closing EOS) is in the transcript but
        // not yet in the KV: evaluate it so the file holds the whole turn.
        prefill(&mut self.session, &self.transcript, 2048)?;
        let mut payload = Vec::new();
        self.session.save_payload_compact(&mut payload)?;
        let text = self.tok.decode(&self.transcript)?;
        let bytes = ds4_kvstore::write_file(
            std::path::Path::new(path),
            self.identity(),
            &ds4_kvstore::NewEntry {
                reason: ds4_kvstore::Reason::Unknown,
                tokens: self.transcript.len() as u32,
                ctx: self.ctx as u32,
                text: &text,
                tool_map: &[],
                payload: &payload,
            },
        )?;
        println!(
            "Saved {} tokens to {path} ({:.1} MB)",
            self.transcript.len(),
            bytes as f64 / 1e6
        );
        Ok(())
    }

    /// `/load FILE`: replaces the conversation and its KV state by a saved
    /// one, after checking the file (checksums, this model) and that it starts
    /// with the current system prompt and thinking head.
    fn load(&mut self, path: &str) -> Result<()> {
        if path.is_empty() {
            anyhow::bail!("usage: /load FILE");
        }
        let (hit, _) = ds4_kvstore::read_file(std::path::Path::new(path), self.identity())?;
        if hit.ctx as usize > self.ctx {
            anyhow::bail!(
                "{path} was saved with a {}-token context; use /ctx {} first",
                hit.ctx,
                hit.ctx
            );
        }
        let mut session = Session::new(self.model, self.ctx, ForwardOptions::default());
        session.load_payload(&mut hit.payload.as_slice())?;
        let head = self.head()?;
        if !session.tokens().starts_with(&head) {
            anyhow::bail!(
                "{path} was saved with another system prompt or thinking mode (-sys, /think-max)"
            );
        }
        self.transcript = session.tokens().to_vec();
        self.head_len = head.len();
        self.session = session;
        println!("Loaded {} tokens from {path}", self.transcript.len());
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
            "/save" => chat.save(rest),
            "/load" => chat.load(rest),
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

#[cfg(test)]
mod tests {
    use super::*;
    use ds4_engine::{ModelConfig, SyntheticSource};

    /// The tiny checkpoint's shape with the real vocabulary, random weights.
    fn model() -> Model {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../ds4-engine/tests/data/tiny-v4/config.json"),
        )
        .unwrap();
        let mut cfg = ModelConfig::from_official_json(&text).unwrap();
        cfg.n_vocab = 129_280;
        Model::new(cfg.clone(), &SyntheticSource::new(cfg, 3)).unwrap()
    }

    fn chat<'m>(model: &'m Model, system: &str) -> Chat<'m> {
        let json = crate::tokenizer_meta::bundled_json().unwrap();
        let mut c = Chat {
            model,
            tok: Tokenizer::from_json_bytes(json.as_bytes()).unwrap(),
            session: Session::new(model, 512, ForwardOptions::default()),
            ctx: 512,
            mode: Mode::NoThink,
            transcript: Vec::new(),
            head_len: 0,
            system: system.to_string(),
        };
        c.rebuild_head().unwrap();
        c
    }

    #[test]
    fn save_then_load_restores_the_conversation_exactly() {
        let model = model();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conv.kv");
        let path = path.to_str().unwrap();
        let mut a = chat(&model, "You are terse.");
        let sp = a.tok.specials();
        let turn = a
            .tok
            .encode_pieces(&[
                Piece::Special(sp.user),
                Piece::Text("Name three rivers of Lombardy."),
                Piece::Special(sp.assistant),
                Piece::Special(sp.think_end),
                Piece::Text("Adda, Ticino, Oglio."),
                Piece::Special(sp.eos),
            ])
            .unwrap();
        a.transcript.extend(turn);
        // As after a turn: the closing EOS is not in the KV yet.
        let n = a.transcript.len();
        prefill(&mut a.session, &a.transcript[..n - 1], 2048).unwrap();
        a.save(path).unwrap();
        assert_eq!(a.session.tokens(), a.transcript.as_slice());

        let mut b = chat(&model, "You are terse.");
        b.load(path).unwrap();
        assert_eq!(b.transcript, a.transcript);
        assert_eq!(b.head_len, a.head_len);
        let bits = |s: &Session<'_>| -> Vec<u32> {
            s.logits().unwrap().iter().map(|x| x.to_bits()).collect()
        };
        assert_eq!(bits(&b.session), bits(&a.session));

        // Another system prompt, a damaged file, another model: refused, and
        // the conversation is left as it was.
        let mut c = chat(&model, "You are verbose.");
        let e = c.load(path).unwrap_err();
        assert!(e.to_string().contains("system prompt"), "{e}");
        assert_eq!(c.transcript.len(), c.head_len);
        let mut bytes = std::fs::read(path).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 4;
        std::fs::write(path, &bytes).unwrap();
        let e = b.load(path).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");
        assert_eq!(b.transcript, a.transcript);
        a.save(path).unwrap();
        let cfg = model.cfg.clone();
        let other = Model::new(cfg.clone(), &SyntheticSource::new(cfg, 4)).unwrap();
        let mut d = chat(&other, "You are terse.");
        let e = d.load(path).unwrap_err();
        assert!(e.to_string().contains("another model"), "{e}");
    }
}
