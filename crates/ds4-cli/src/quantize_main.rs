//! `ds4-quantize`: write ds4-layout GGUF files.
//!
//! `--synthetic` writes a random-weight model in the exact published layout
//! (full size by default, or the sizes of a `--config` JSON), for benchmarks and
//! tests when the real weights are not at hand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ds4_cli::layout::{Recipe, Shape};
use ds4_cli::synthetic::{self, SyntheticOptions};
use ds4_cli::tokenizer_meta::TokenizerMeta;

#[derive(Parser, Debug)]
#[command(
    name = "ds4-quantize",
    version,
    about = "Write ds4-layout GGUF model files"
)]
struct Args {
    /// Write a random-weight model in the published layout.
    #[arg(long)]
    synthetic: bool,
    /// JSON with model sizes overriding the Flash release (fields of `Shape`:
    /// n_layer, n_embd, n_vocab, n_head, head_dim, ff_exp, n_expert, ...).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Tensor types: q2 (the published IQ2_XXS/Q2_K file), q4, q8, f16 or f32.
    #[arg(long, default_value = "q2")]
    recipe: String,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: PathBuf,
    /// Replace the output file if it exists.
    #[arg(long)]
    overwrite: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ds4-quantize: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<()> {
    if !args.synthetic {
        bail!(
            "nothing to do: pass --synthetic (conversion from an official checkpoint is not available yet)"
        );
    }
    let recipe = Recipe::parse(&args.recipe)?;
    let shape: Shape = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a valid model config", p.display()))?
        }
        None => Shape::default(),
    };
    if args.out.exists() && !args.overwrite {
        bail!(
            "{} exists (pass --overwrite to replace it)",
            args.out.display()
        );
    }
    let tokenizer = TokenizerMeta::bundled()?;
    let specs = ds4_cli::layout::tensors(&shape, recipe)?;
    let total: u64 = specs
        .iter()
        .map(|t| t.ty.bytes_for(t.n_elements()).unwrap_or(0))
        .sum();
    eprintln!(
        "ds4-quantize: synthetic {} model, {} layers × {} wide, {} tensors, {:.2} GB → {}",
        recipe.name(),
        shape.n_layer,
        shape.n_embd,
        specs.len(),
        total as f64 / 1e9,
        args.out.display()
    );
    let report = synthetic::write_atomic(&SyntheticOptions {
        shape,
        recipe,
        seed: args.seed,
        out: &args.out,
        tokenizer: &tokenizer,
        progress: !args.quiet,
    })?;
    eprintln!(
        "ds4-quantize: wrote {} tensors, {:.2} GB in {:.1} s ({:.2} GB/s)",
        report.n_tensors,
        report.bytes as f64 / 1e9,
        report.seconds,
        report.bytes as f64 / 1e9 / report.seconds.max(1e-9)
    );
    Ok(())
}
