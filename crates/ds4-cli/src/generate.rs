//! One-shot generation: `ds4 -p TEXT` / `--prompt-file F`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use ds4_chat::ThinkingMode;
use ds4_engine::{
    ForwardOptions, ForwardState, LogitsFor, Model, Sampler, SamplingParams, Session,
};
use ds4_gguf::GgufFile;
use ds4_tokenizer::Tokenizer;
use indicatif::{ProgressBar, ProgressStyle};

use crate::args::Args;
use crate::{demo, model_path, tokens};

/// `-m FILE`, else `ds4flash.gguf` here, else the demo model (saying so).
pub fn resolve_model(args: &Args) -> Result<PathBuf> {
    resolve_model_path(args.model.as_deref())
}

/// [`resolve_model`] for an optional `-m` value.
pub fn resolve_model_path(model: Option<&std::path::Path>) -> Result<PathBuf> {
    match model_path::find(model)? {
        Some(p) => Ok(p),
        None => {
            let p = demo::ensure()?;
            eprintln!(
                "ds4: {} not found; using the bundled demo model (a tiny V4 trained on Manzoni and three toy tools) {}",
                model_path::DEFAULT_MODEL,
                p.display()
            );
            Ok(p)
        }
    }
}

/// Loads a DeepSeek V4 model, refusing other GGUF files with one line that says
/// what they are.
pub fn open_model(path: &std::path::Path) -> Result<Model> {
    let f = GgufFile::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    match f.get_str_opt("general.architecture") {
        Ok(Some("deepseek4")) => {}
        Ok(Some(other)) => {
            anyhow::bail!("{} is a `{other}` model, not DeepSeek V4", path.display())
        }
        _ => anyhow::bail!(
            "{} has no general.architecture: not a DeepSeek V4 model",
            path.display()
        ),
    }
    drop(f);
    Model::from_gguf(path).with_context(|| format!("cannot load {}", path.display()))
}

pub fn tokenizer_from_gguf(path: &std::path::Path) -> Result<Tokenizer> {
    let f = GgufFile::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    tokens::tokenizer_from_file(&f)
        .with_context(|| format!("building the tokenizer of {}", path.display()))
}

pub fn sampling(args: &Args) -> SamplingParams {
    SamplingParams {
        temperature: args.temp,
        top_k: args.top_k as usize,
        top_p: args.top_p,
        min_p: args.min_p,
        seed: seed(args),
    }
}

pub fn seed(args: &Args) -> u64 {
    args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ u64::from(std::process::id()).rotate_left(32)
    })
}

/// The sampled next token; logits without one finite value are an error.
pub fn next_token(sampler: &mut Sampler, logits: &[f32]) -> Result<u32> {
    sampler
        .sample(logits, false)
        .context("the model produced no finite logit")
}

/// Prefills `tokens` into the session in chunks, with a progress bar on a
/// terminal. Returns the number of tokens evaluated.
pub fn prefill(session: &mut Session<'_>, tokens: &[u32], chunk: usize) -> Result<usize> {
    let have = session.tokens();
    if have.len() > tokens.len() || have != &tokens[..have.len()] {
        // A rewind: the session replays what it keeps in one call.
        return Ok(session.sync(tokens)?);
    }
    let start = have.len();
    let bar = prefill_bar(tokens.len() - start, chunk);
    let mut evaluated = 0;
    let mut end = start;
    loop {
        end = (end + chunk).min(tokens.len());
        evaluated += session.sync(&tokens[..end])?;
        bar.set_position((end - start) as u64);
        if end == tokens.len() {
            break;
        }
    }
    bar.finish_and_clear();
    Ok(evaluated)
}

/// A progress bar for a prefill of `n` tokens, on a terminal and when it takes more
/// than one chunk.
fn prefill_bar(n: usize, chunk: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() || n <= chunk {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(n as u64);
    b.set_style(
        ProgressStyle::with_template(
            "processing {len} input tokens: {pos}/{len} ({percent}%) {per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Prefills `tokens` into a fresh backend state in runs of `chunk`, with a progress
/// bar on a terminal; returns the logits after the last token.
pub fn prefill_state(st: &mut dyn ForwardState, tokens: &[u32], chunk: usize) -> Result<Vec<f32>> {
    let chunk = chunk.clamp(1, st.max_batch());
    let bar = prefill_bar(tokens.len(), chunk);
    let mut last = None;
    for (i, c) in tokens.chunks(chunk).enumerate() {
        last = st.forward(c, LogitsFor::Last)?.pop();
        bar.set_position(((i + 1) * chunk).min(tokens.len()) as u64);
    }
    bar.finish_and_clear();
    last.context("empty prompt")
}

/// Writes generated text: reasoning dimmed on a terminal, the think tags
/// themselves stripped, a newline forced after `</think>` (ds4's output).
pub struct Printer {
    tty: bool,
    in_think: bool,
}

impl Printer {
    pub fn new(in_think: bool) -> Printer {
        Printer {
            tty: std::io::stdout().is_terminal(),
            in_think,
        }
    }

    pub fn think_end(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        if self.in_think {
            self.in_think = false;
            if self.tty {
                write!(out, "\x1b[0m")?;
            }
            writeln!(out)?;
        }
        Ok(())
    }

    pub fn think_start(&mut self) {
        self.in_think = true;
    }

    pub fn text(&mut self, out: &mut impl Write, s: &str) -> std::io::Result<()> {
        if s.is_empty() {
            return Ok(());
        }
        if self.in_think && self.tty {
            write!(out, "\x1b[90m{s}\x1b[0m")?;
        } else {
            write!(out, "{s}")?;
        }
        out.flush()
    }
}

pub fn run(args: &Args) -> Result<()> {
    let text = tokens::prompt_text(args)?;
    let path = resolve_model(args)?;
    let load = Instant::now();
    let model = open_model(&path)?;
    crate::memory::check_fits(&model.cfg, args.ctx as usize)?;
    let tok = tokenizer_from_gguf(&path)?;
    eprintln!(
        "ds4: loaded {} in {:.2} s",
        path.display(),
        load.elapsed().as_secs_f64()
    );
    let prompt = tokens::prompt_tokens(&tok, args, &text)?;
    let ctx = args.ctx as usize;
    if prompt.len() >= ctx {
        anyhow::bail!(
            "the prompt has {} tokens but the context is {ctx} (raise -c)",
            prompt.len()
        );
    }
    let loaded = crate::device::load(
        &model,
        (args.cpu, args.cuda),
        ctx,
        crate::device::AUTO_BATCH,
    )?;
    let chunk = loaded.batch();
    let mut st = loaded.backend().new_state(ctx, ForwardOptions::default())?;
    let t0 = Instant::now();
    let mut logits = prefill_state(st.as_mut(), &prompt, chunk)?;
    let prefill_s = t0.elapsed().as_secs_f64();

    let specials = tok.specials();
    let params = sampling(args);
    let mut sampler = Sampler::new(params);
    let budget = (args.tokens as usize).min(ctx - prompt.len() - 1).max(1);
    let thinking = tokens::thinking_mode(args) == ThinkingMode::Thinking;
    let mut printer = Printer::new(thinking);
    let mut decoder = tok.stream_decoder();
    let mut out = std::io::stdout().lock();
    let t1 = Instant::now();
    let mut generated = 0usize;
    let mut next = next_token(&mut sampler, &logits)?;
    loop {
        generated += 1;
        if next == specials.eos {
            break;
        }
        if next == specials.think_end {
            printer.think_end(&mut out)?;
        } else if next == specials.think_start {
            printer.think_start();
        } else {
            let s = decoder.push(&tok, next)?;
            printer.text(&mut out, &s)?;
        }
        if generated >= budget {
            break;
        }
        if sampler.is_greedy() {
            // The backend picks where the logits are (a GPU copies back one id).
            next = st
                .forward_greedy(next, None)?
                .context("the model produced no finite logit")?;
            continue;
        }
        logits = st
            .forward(&[next], LogitsFor::Last)?
            .pop()
            .context("no logits")?;
        next = next_token(&mut sampler, &logits)?;
    }
    printer.text(&mut out, &decoder.finish())?;
    printer.think_end(&mut out)?;
    writeln!(out)?;
    let gen_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "ds4: prefill: {:.2} t/s, generation: {:.2} t/s ({} prompt tokens, {} generated)",
        prompt.len() as f64 / prefill_s.max(1e-9),
        generated as f64 / gen_s.max(1e-9),
        prompt.len(),
        generated
    );
    Ok(())
}
