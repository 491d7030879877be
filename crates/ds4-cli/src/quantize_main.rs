//! `ds4-quantize`: write ds4-layout GGUF files.
//!
//! `--from-official DIR` converts an official-format DeepSeek V4 checkpoint
//! (safetensors, FP8/FP4 with E8M0 scales, official tensor names) to the ds4
//! layout. `--synthetic` writes a random-weight model in the exact published
//! layout (full size by default, or the sizes of a `--config` JSON), for
//! benchmarks and tests when the real weights are not at hand.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use ds4_cli::convert::Converter;
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
    /// Convert an official-format checkpoint directory (config.json + *.safetensors).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["synthetic", "config"])]
    from_official: Option<PathBuf>,
    /// Importance matrix (llama.cpp legacy .dat, as ds4's collector writes) for
    /// --from-official; without one, IQ2_XXS uses each matrix's column energy.
    #[arg(long, value_name = "FILE", requires = "from_official")]
    imatrix: Option<PathBuf>,
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
    if args.from_official.is_none() && !args.synthetic {
        bail!("nothing to do: pass --from-official DIR or --synthetic");
    }
    let recipe = Recipe::parse(&args.recipe)?;
    if args.out.exists() && !args.overwrite {
        bail!(
            "{} exists (pass --overwrite to replace it)",
            args.out.display()
        );
    }
    if let Some(dir) = &args.from_official {
        return from_official(dir, recipe, &args);
    }
    let shape: Shape = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: not a valid model config", p.display()))?
        }
        None => Shape::default(),
    };
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

fn from_official(dir: &std::path::Path, recipe: Recipe, args: &Args) -> Result<()> {
    let mut conv = Converter::open(dir, recipe)?;
    if let Some(p) = &args.imatrix {
        let im = ds4_cli::convert::imatrix::Imatrix::load(p)?;
        let n = im.len();
        let matched = conv.set_imatrix(im)?;
        eprintln!(
            "ds4-quantize: imatrix {}: {n} entries, used for {matched} tensor(s)",
            p.display()
        );
    }
    for w in &conv.warnings {
        eprintln!("ds4-quantize: warning: {w}");
    }
    if !conv.skipped.is_empty() {
        const SHOWN: usize = 6;
        let list = conv.skipped[..conv.skipped.len().min(SHOWN)].join(", ");
        let more = conv.skipped.len().saturating_sub(SHOWN);
        eprintln!(
            "ds4-quantize: skipping {} official tensor(s) the ds4 layout has no place for: {list}{}",
            conv.skipped.len(),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    let s = conv.shape();
    eprintln!(
        "ds4-quantize: {} → {} {}, {} layers × {} wide, {} tensors, {}",
        dir.display(),
        args.out.display(),
        recipe.name(),
        s.n_layer,
        s.n_embd,
        conv.n_tensors(),
        size(conv.out_bytes())
    );
    // Written next to the target and renamed, so an interrupted run never
    // leaves a file that looks complete.
    let tmp = args.out.with_extension("gguf.partial");
    let report = match conv.write(&tmp, !args.quiet) {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
    };
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("renaming to {}", args.out.display()))?;
    eprintln!(
        "ds4-quantize: converted {} tensors, {} in {:.1} s ({}/s)",
        report.n_tensors,
        size(report.bytes),
        report.seconds,
        size((report.bytes as f64 / report.seconds.max(1e-9)) as u64)
    );
    Ok(())
}

/// Decimal units, so tiny test models do not print as "0.00 GB".
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.1} kB", b / 1e3)
    }
}
