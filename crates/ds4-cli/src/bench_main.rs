//! `ds4-bench`: prefill and decode speed at growing context frontiers (ds4's
//! method and CSV columns), and an SVG plot of the CSV.
//!
//! At each frontier the new interval of one fixed token sequence is prefilled and
//! timed; the state is snapshotted (untimed), exactly `gen` tokens are decoded with
//! greedy argmax excluding EOS and timed, and the snapshot restored.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{ArgAction, Parser};
use ds4_chat::{ThinkingMode, encode_single_turn};
use ds4_cli::args::rewrite_ds4_spellings;
use ds4_cli::generate::{open_model, resolve_model_path, tokenizer_from_gguf};
use ds4_cli::tokens::encode_prompt;
use ds4_engine::{ForwardOptions, LogitsFor};
use ds4_tokenizer::SpecialMode;

#[derive(Parser, Debug)]
#[command(
    name = "ds4-bench",
    version,
    about = "Prefill and decode speed at growing context sizes"
)]
struct BenchArgs {
    /// Model file (default ds4flash.gguf, else the bundled demo model).
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    model: Option<PathBuf>,
    /// Raw text, tokenized as is.
    #[arg(
        long = "prompt-file",
        value_name = "FILE",
        conflicts_with = "chat_prompt_file",
        required_unless_present_any = ["chat_prompt_file", "plot_csv"]
    )]
    prompt_file: Option<PathBuf>,
    /// Text sent as one no-think user message after the system prompt.
    #[arg(long = "chat-prompt-file", value_name = "FILE")]
    chat_prompt_file: Option<PathBuf>,
    /// System prompt for --chat-prompt-file (ds4 spells it -sys).
    #[arg(
        long = "system",
        value_name = "TEXT",
        default_value = "You are a helpful assistant."
    )]
    system: String,
    #[arg(long = "cpu", action = ArgAction::SetTrue, conflicts_with = "cuda")]
    cpu: bool,
    #[arg(long = "cuda", action = ArgAction::SetTrue)]
    cuda: bool,
    /// CPU threads.
    #[arg(short = 't', long = "threads", value_name = "N")]
    threads: Option<usize>,
    /// Accepted for ds4 compatibility; no effect here.
    #[arg(long = "quality", action = ArgAction::SetTrue)]
    quality: bool,
    /// Accepted for ds4 compatibility (weights are always resident); no effect.
    #[arg(long = "warm-weights", action = ArgAction::SetTrue)]
    warm_weights: bool,
    #[arg(long = "ctx-start", default_value_t = 2048)]
    ctx_start: usize,
    #[arg(long = "ctx-max", default_value_t = 32768)]
    ctx_max: usize,
    /// Context allocated (default ctx-max + gen-tokens + 1).
    #[arg(long = "ctx-alloc")]
    ctx_alloc: Option<usize>,
    #[arg(long = "step-incr", default_value_t = 2048)]
    step_incr: usize,
    /// Multiply the frontier by this (> 1) instead of adding --step-incr.
    #[arg(long = "step-mul", default_value_t = 1.0)]
    step_mul: f64,
    #[arg(
        short = 'n',
        long = "gen-tokens",
        visible_alias = "tokens",
        default_value_t = 128
    )]
    gen_tokens: usize,
    /// CSV output (default stdout).
    #[arg(long = "csv", value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Also draw the CSV as an SVG chart.
    #[arg(long = "svg", value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Draw an existing CSV (needs --svg) instead of running.
    #[arg(long = "plot-csv", value_name = "FILE", requires = "svg")]
    plot_csv: Option<PathBuf>,
    /// Tokens per prefill batch (ds4 takes 2048). Default: on a GPU the largest of
    /// 8192, 4096 and 2048 that its free memory holds, on the CPU 2048.
    #[arg(long = "batch", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
}

struct Row {
    ctx: usize,
    prefill_tokens: usize,
    prefill_tps: f64,
    gen_tokens: usize,
    gen_tps: f64,
    kv_bytes: usize,
}

fn frontiers(a: &BenchArgs) -> Result<Vec<usize>> {
    if a.ctx_start == 0 || a.ctx_start > a.ctx_max {
        anyhow::bail!("--ctx-start must be in 1..=--ctx-max");
    }
    if a.step_mul < 1.0 || !a.step_mul.is_finite() {
        anyhow::bail!("--step-mul must be at least 1");
    }
    if a.step_mul <= 1.0 && a.step_incr == 0 {
        anyhow::bail!("--step-incr must be positive");
    }
    let mut v = vec![a.ctx_start];
    loop {
        let f = *v.last().unwrap_or(&a.ctx_start);
        let next = if a.step_mul > 1.0 {
            ((f as f64 * a.step_mul).round() as usize).max(f + 1)
        } else {
            f + a.step_incr
        };
        if next > a.ctx_max {
            break;
        }
        v.push(next);
    }
    Ok(v)
}

/// Reads a CSV this program wrote.
fn read_csv(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    let head = lines.next().unwrap_or_default();
    if head.trim() != "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes" {
        anyhow::bail!("not a ds4-bench CSV (header `{head}`)");
    }
    lines
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(',').collect();
            let bad = || anyhow::anyhow!("line {}: `{l}`", i + 2);
            if f.len() != 6 {
                return Err(bad());
            }
            Ok(Row {
                ctx: f[0].trim().parse().map_err(|_| bad())?,
                prefill_tokens: f[1].trim().parse().map_err(|_| bad())?,
                prefill_tps: f[2].trim().parse().map_err(|_| bad())?,
                gen_tokens: f[3].trim().parse().map_err(|_| bad())?,
                gen_tps: f[4].trim().parse().map_err(|_| bad())?,
                kv_bytes: f[5].trim().parse().map_err(|_| bad())?,
            })
        })
        .collect()
}

fn run(a: &BenchArgs) -> Result<()> {
    if let (Some(csv), Some(out)) = (&a.plot_csv, &a.svg) {
        let text =
            std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
        let rows = read_csv(&text).with_context(|| format!("{}", csv.display()))?;
        let title = csv
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("ds4-bench");
        return std::fs::write(out, svg(&rows, title))
            .with_context(|| format!("writing {}", out.display()));
    }
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .ok();
    }
    let fr = frontiers(a)?;
    let ctx_alloc = a.ctx_alloc.unwrap_or(a.ctx_max + a.gen_tokens + 1);
    if ctx_alloc <= a.ctx_max + a.gen_tokens {
        anyhow::bail!("--ctx-alloc must be greater than ctx-max + gen-tokens");
    }
    let path = resolve_model_path(a.model.as_deref())?;
    let model = open_model(&path)?;
    let tok = tokenizer_from_gguf(&path)?;
    let toks = if let Some(f) = &a.prompt_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        tok.encode(&text, SpecialMode::Raw)
    } else {
        let f = a.chat_prompt_file.as_ref().context("no prompt file")?;
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let p = encode_single_turn(Some(&a.system), &text, ThinkingMode::Chat, None);
        encode_prompt(&tok, &p)?
    };
    if toks.len() < a.ctx_max {
        anyhow::bail!(
            "the prompt has {} tokens; the bench needs at least --ctx-max = {} (use a longer file or a smaller --ctx-max)",
            toks.len(),
            a.ctx_max
        );
    }
    let loaded = ds4_cli::device::load(
        &model,
        (a.cpu, a.cuda),
        ctx_alloc,
        a.batch.map_or(ds4_cli::device::AUTO_BATCH, |b| b as usize),
    )?;
    let batch = a.batch.map_or(loaded.batch(), |b| b as usize);
    let be = loaded.backend();
    eprintln!(
        "ds4-bench: {} on {}, frontiers {:?}, prefill batches of {batch}",
        path.display(),
        be.name(),
        fr
    );
    let mut st = be.new_state(ctx_alloc, ForwardOptions::default())?;
    let eos = tok.specials().eos;
    let mut rows = Vec::new();
    let mut out: Box<dyn Write> = match &a.csv {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?)
        }
        None => Box::new(std::io::stdout()),
    };
    writeln!(
        out,
        "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes"
    )?;
    for &f in &fr {
        let start = st.n_tokens();
        let t0 = Instant::now();
        let mut logits = Vec::new();
        for c in toks[start..f].chunks(batch.clamp(1, st.max_batch())) {
            logits = st.forward(c, LogitsFor::Last)?.pop().context("no logits")?;
        }
        let prefill_s = t0.elapsed().as_secs_f64();
        let kv_bytes = st.kv_bytes();
        let snap = st.snapshot()?;
        let t1 = Instant::now();
        // Greedy, EOS excluded so every frontier decodes exactly gen tokens; after the
        // prompt's logits the backend picks (on a GPU: one id copied back, not the row).
        let fallback = if eos == 0 { 1 } else { 0 };
        let mut best = ds4_engine::sampling::argmax_banned(&mut logits, Some(eos))
            .filter(|&b| b != eos)
            .unwrap_or(fallback);
        for _ in 0..a.gen_tokens {
            best = st
                .forward_greedy(best, Some(eos))?
                .filter(|&b| b != eos)
                .unwrap_or(fallback);
        }
        let gen_s = t1.elapsed().as_secs_f64();
        st.restore(&snap)?;
        let row = Row {
            ctx: f,
            prefill_tokens: f - start,
            prefill_tps: (f - start) as f64 / prefill_s.max(1e-9),
            gen_tokens: a.gen_tokens,
            gen_tps: a.gen_tokens as f64 / gen_s.max(1e-9),
            kv_bytes,
        };
        writeln!(
            out,
            "{},{},{:.2},{},{:.2},{}",
            row.ctx, row.prefill_tokens, row.prefill_tps, row.gen_tokens, row.gen_tps, row.kv_bytes
        )?;
        out.flush()?;
        eprintln!(
            "ds4-bench: ctx {:>6}: prefill {:>9.2} t/s, decode {:>8.2} t/s",
            row.ctx, row.prefill_tps, row.gen_tps
        );
        rows.push(row);
    }
    if let Some(p) = &a.svg {
        let title = format!(
            "{} on {}",
            path.file_name().and_then(|s| s.to_str()).unwrap_or("model"),
            be.name()
        );
        std::fs::write(p, svg(&rows, &title))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// A chart: its label, the value it plots, its colour.
type Panel = (&'static str, fn(&Row) -> f64, &'static str);

/// Two line charts side by side: prefill and decode tokens/s against context.
fn svg(rows: &[Row], title: &str) -> String {
    let (w, h) = (960.0, 540.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"16\">{}</text>\n",
        w / 2.0,
        xml(title)
    );
    let panels: [Panel; 2] = [
        ("prefill tokens/s", |r| r.prefill_tps, "#1f77b4"),
        ("decode tokens/s", |r| r.gen_tps, "#d62728"),
    ];
    let xmax = rows.iter().map(|r| r.ctx).max().unwrap_or(1) as f64;
    for (pi, (label, get, color)) in panels.iter().enumerate() {
        let (x0, y0, pw, ph) = (70.0 + pi as f64 * 470.0, 60.0, 380.0, 400.0);
        let ymax = rows.iter().map(get).fold(0.0, f64::max).max(1e-9) * 1.1;
        s += &format!(
            "<rect x=\"{x0}\" y=\"{y0}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>\n\
             <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">context tokens</text>\n",
            x0 + pw / 2.0,
            y0 - 8.0,
            x0 + pw / 2.0,
            y0 + ph + 36.0
        );
        for k in 0..=4 {
            let v = ymax * k as f64 / 4.0;
            let y = y0 + ph - ph * k as f64 / 4.0;
            s += &format!(
                "<line x1=\"{x0}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#eee\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{v:.0}</text>\n",
                x0 + pw,
                x0 - 4.0,
                y + 4.0
            );
        }
        let pts: Vec<String> = rows
            .iter()
            .map(|r| {
                let x = x0 + pw * r.ctx as f64 / xmax;
                let y = y0 + ph - ph * get(r) / ymax;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        s += &format!(
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>\n",
            pts.join(" ")
        );
        for (r, p) in rows.iter().zip(&pts) {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            s += &format!(
                "<circle cx=\"{x}\" cy=\"{y}\" r=\"3\" fill=\"{color}\"/>\
                 <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n",
                y0 + ph + 14.0,
                r.ctx
            );
        }
    }
    s + "</svg>\n"
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn main() -> ExitCode {
    let a = BenchArgs::parse_from(rewrite_ds4_spellings(std::env::args()));
    let _ = (a.quality, a.warm_weights);
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ds4-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BenchArgs {
        let mut v = vec!["ds4-bench", "--prompt-file", "x"];
        v.extend_from_slice(extra);
        BenchArgs::parse_from(v)
    }

    #[test]
    fn frontiers_follow_ds4_steps() {
        assert_eq!(frontiers(&args(&[])).unwrap().len(), 16);
        assert_eq!(
            frontiers(&args(&[
                "--ctx-start",
                "2048",
                "--ctx-max",
                "16384",
                "--step-mul",
                "2"
            ]))
            .unwrap(),
            vec![2048, 4096, 8192, 16384]
        );
        assert_eq!(
            frontiers(&args(&[
                "--ctx-start",
                "100",
                "--ctx-max",
                "350",
                "--step-incr",
                "100"
            ]))
            .unwrap(),
            vec![100, 200, 300]
        );
        assert!(frontiers(&args(&["--ctx-start", "0"])).is_err());
        assert!(frontiers(&args(&["--step-mul", "0.5"])).is_err());
    }

    #[test]
    fn batch_is_chosen_unless_given_and_never_zero() {
        assert_eq!(args(&[]).batch, None);
        assert_eq!(args(&["--batch", "2048"]).batch, Some(2048));
        assert!(
            BenchArgs::try_parse_from(["ds4-bench", "--prompt-file", "x", "--batch", "0"]).is_err()
        );
    }

    #[test]
    fn svg_has_both_panels_and_every_point() {
        let rows: Vec<Row> = (1..=3)
            .map(|i| Row {
                ctx: i * 2048,
                prefill_tokens: 2048,
                prefill_tps: 1000.0 * i as f64,
                gen_tokens: 64,
                gen_tps: 30.0,
                kv_bytes: 1,
            })
            .collect();
        let csv = "ctx_tokens,prefill_tokens,prefill_tps,gen_tokens,gen_tps,kvcache_bytes\n2048,2048,51.11,64,14.83,1\n";
        assert_eq!(read_csv(csv).unwrap()[0].ctx, 2048);
        assert!(read_csv("a,b\n1,2\n").is_err());
        assert!(read_csv(&format!("{csv}1,2,3\n")).is_err());
        let s = svg(&rows, "a <b>");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(s.matches("<circle").count(), 6);
        assert!(s.contains("a &lt;b&gt;"));
    }
}
