//! `ds4`: DeepSeek V4 Flash from the command line.

use std::process::ExitCode;

use ds4_cli::args::Args;
use ds4_cli::{diagnostics, generate, inspect, model_path, repl, tokens};

fn main() -> ExitCode {
    let args = Args::parse_from_env();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`ds4 --inspect | head`) is not an error worth a message.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ds4: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    if args.cuda {
        // Say at once when there is no GPU, before loading anything.
        ds4_cli::device::choose(false, true)?;
    }
    // ds4's default: every online CPU, at most 32 (DS4_THREADS overrides).
    let threads = match (args.threads, std::env::var("DS4_THREADS").ok()) {
        (Some(n), _) => n as usize,
        (None, Some(v)) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| anyhow::anyhow!("invalid value for DS4_THREADS: `{v}`"))?,
        (None, None) => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(32),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| anyhow::anyhow!("starting {threads} threads: {e}"))?;
    if args.inspect {
        let path = model_path::resolve(args.model.as_deref())?;
        return inspect::run(&path, args.ctx as usize);
    }
    if let Some(name) = &args.dump_tensor {
        let path = model_path::resolve(args.model.as_deref())?;
        let out = args
            .out
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--dump-tensor needs --out FILE"))?;
        return inspect::dump_tensor(&path, name, out);
    }
    if args.dump_tokens {
        return tokens::dump(args);
    }
    if let Some(out) = &args.dump_logits {
        return diagnostics::dump_logits(args, out);
    }
    if let Some(out) = &args.dump_logprobs {
        return diagnostics::dump_logprobs(args, out);
    }
    if let Some(file) = &args.perplexity_file {
        return diagnostics::perplexity(args, file);
    }
    if args.prompt.is_some() || args.prompt_file.is_some() {
        return generate::run(args);
    }
    repl::run(args)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
