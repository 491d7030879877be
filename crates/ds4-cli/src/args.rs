//! Command-line flags of `ds4`. They follow ds4's (antirez's C engine) spelling so
//! commands from its README and from hosting runbooks keep working; the few
//! single-dash long flags ds4 accepts (`-sys`) are rewritten before clap sees them.

use std::path::PathBuf;

use clap::{ArgAction, Parser};

#[derive(Parser, Debug)]
#[command(
    name = "ds4",
    version,
    about = "DeepSeek V4 Flash inference engine",
    disable_help_subcommand = true
)]
pub struct Args {
    /// GGUF model file (default: ds4flash.gguf, else the bundled demo model).
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    pub model: Option<PathBuf>,

    /// Prompt text (one-shot generation).
    #[arg(
        short = 'p',
        long = "prompt",
        value_name = "TEXT",
        conflicts_with = "prompt_file",
        allow_hyphen_values = true
    )]
    pub prompt: Option<String>,

    /// Read the prompt from a file.
    #[arg(long = "prompt-file", value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,

    /// System text (ds4 spells it `-sys`; empty disables).
    #[arg(long = "system", value_name = "TEXT", allow_hyphen_values = true)]
    pub system: Option<String>,

    /// Session context size in tokens.
    #[arg(short = 'c', long = "ctx", value_name = "N", default_value_t = 32768,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ctx: u32,

    /// Maximum generated tokens.
    #[arg(short = 'n', long = "tokens", value_name = "N", default_value_t = 50000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tokens: u32,

    /// Sampling temperature (0 = greedy).
    #[arg(long = "temp", value_name = "F", default_value_t = 1.0, value_parser = float_in(0.0, 100.0))]
    pub temp: f32,

    #[arg(long = "top-p", value_name = "F", default_value_t = 1.0, value_parser = float_in(0.0, 1.0))]
    pub top_p: f32,

    #[arg(long = "top-k", value_name = "N", default_value_t = 0)]
    pub top_k: u32,

    #[arg(long = "min-p", value_name = "F", default_value_t = 0.05, value_parser = float_in(0.0, 1.0))]
    pub min_p: f32,

    #[arg(long = "seed", value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub seed: Option<u64>,

    /// Thinking mode "high" (the default).
    #[arg(long = "think", action = ArgAction::SetTrue, conflicts_with_all = ["think_max", "nothink"])]
    pub think: bool,

    /// Thinking mode "max".
    #[arg(long = "think-max", action = ArgAction::SetTrue, conflicts_with = "nothink")]
    pub think_max: bool,

    /// No thinking.
    #[arg(long = "nothink", action = ArgAction::SetTrue)]
    pub nothink: bool,

    /// Run on the CPU.
    #[arg(long = "cpu", action = ArgAction::SetTrue, conflicts_with = "cuda")]
    pub cpu: bool,

    /// Run on CUDA.
    #[arg(long = "cuda", action = ArgAction::SetTrue)]
    pub cuda: bool,

    /// CPU threads (default: all online CPUs, at most 32).
    #[arg(short = 't', long = "threads", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Print a summary of the GGUF file (metadata, tensors, bytes) and exit.
    #[arg(long = "inspect", action = ArgAction::SetTrue)]
    pub inspect: bool,

    /// Dequantize one tensor to raw little-endian f32 (needs --out).
    #[arg(long = "dump-tensor", value_name = "NAME", requires = "out")]
    pub dump_tensor: Option<String>,

    /// Output file for --dump-tensor.
    #[arg(long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Tokenize the prompt and print the ids, then one line per token.
    #[arg(long = "dump-tokens", action = ArgAction::SetTrue)]
    pub dump_tokens: bool,

    /// With --dump-tokens: recognise no special tokens in the text.
    #[arg(long = "raw", action = ArgAction::SetTrue, requires = "dump_tokens")]
    pub raw: bool,

    /// With --dump-tokens: render the prompt as ds4 does for generation
    /// (BOS, system, user turn, assistant prefix) before tokenizing.
    #[arg(long = "chat", action = ArgAction::SetTrue, requires = "dump_tokens", conflicts_with = "raw")]
    pub chat: bool,
    /// Greedy continuation with the top-k log-probabilities of every step, as
    /// ds4's JSON.
    #[arg(long = "dump-logprobs", value_name = "FILE")]
    pub dump_logprobs: Option<PathBuf>,

    /// Alternatives per step for --dump-logprobs (at most 128).
    #[arg(long = "logprobs-top-k", value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=128))]
    pub logprobs_top_k: u32,

    /// Teacher-forced logits of every prompt position as raw little-endian f32
    /// (n_tokens × vocab); the prompt comes from --prompt-tokens.
    #[arg(long = "dump-logits", value_name = "FILE", requires = "prompt_tokens")]
    pub dump_logits: Option<PathBuf>,

    /// JSON array of token ids for --dump-logits.
    #[arg(long = "prompt-tokens", value_name = "FILE")]
    pub prompt_tokens: Option<PathBuf>,

    /// Turn off the model's quantization simulations (diagnostic: to compare
    /// with transformers, which has none).
    #[arg(long = "no-qat-sim", action = ArgAction::SetTrue)]
    pub no_qat_sim: bool,

    /// Tokens per prefill batch.
    #[arg(long = "prefill-chunk", value_name = "N", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub prefill_chunk: u32,

    /// Teacher-forced perplexity over a raw text file (no chat template).
    #[arg(long = "perplexity-file", value_name = "FILE", conflicts_with_all = ["prompt", "prompt_file"])]
    pub perplexity_file: Option<PathBuf>,
}

impl Args {
    /// Parses `argv`, accepting ds4's `-sys TEXT` spelling.
    pub fn parse_from_env() -> Args {
        Args::parse_from(rewrite_ds4_spellings(std::env::args()))
    }
}

/// ds4 accepts `-sys` as a long flag with one dash; clap cannot express that, so
/// it is rewritten to `--system` before parsing. Only whole arguments are
/// rewritten, so a prompt that happens to be "-sys" after `-p` stays intact.
pub fn rewrite_ds4_spellings(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut prev_takes_value = false;
    for a in args {
        let rewritten = if !prev_takes_value && a == "-sys" {
            "--system".to_string()
        } else {
            a
        };
        prev_takes_value = matches!(
            rewritten.as_str(),
            "-p" | "--prompt"
                | "--system"
                | "-m"
                | "--model"
                | "--prompt-file"
                | "--out"
                | "--dump-tensor"
        );
        out.push(rewritten);
    }
    out
}

fn float_in(lo: f32, hi: f32) -> impl Fn(&str) -> Result<f32, String> + Clone {
    move |s: &str| {
        let v: f32 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
        if v.is_finite() && (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} is outside [{lo}, {hi}]"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(rewrite_ds4_spellings(v.iter().map(|s| s.to_string())))
    }

    #[test]
    fn ds4_spellings_parse() {
        let a = parse(&[
            "ds4", "-m", "x.gguf", "-sys", "be brief", "-p", "-sys", "-c", "4096", "--temp", "0",
        ])
        .unwrap();
        assert_eq!(a.system.as_deref(), Some("be brief"));
        assert_eq!(a.prompt.as_deref(), Some("-sys"));
        assert_eq!(a.ctx, 4096);
        assert_eq!(a.temp, 0.0);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["ds4", "--temp", "101"]).is_err());
        assert!(parse(&["ds4", "--top-p", "nan"]).is_err());
        assert!(parse(&["ds4", "-c", "0"]).is_err());
        assert!(parse(&["ds4", "--seed", "0"]).is_err());
        assert!(parse(&["ds4", "-p", "a", "--prompt-file", "f"]).is_err());
        assert!(parse(&["ds4", "--nothink", "--think-max"]).is_err());
        assert!(parse(&["ds4", "--dump-tensor", "x"]).is_err());
    }
}
