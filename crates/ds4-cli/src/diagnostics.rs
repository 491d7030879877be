//! Numeric diagnostics: `--dump-logits` (teacher-forced logits of every prompt
//! position), `--dump-logprobs` (ds4's greedy top-k JSON) and
//! `--perplexity-file`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use ds4_engine::{ForwardOptions, LogitsFor, Model, Session, sampling::argmax};
use ds4_tokenizer::{SpecialMode, Tokenizer};

use crate::args::Args;
use crate::generate::{prefill, resolve_model, tokenizer_from_gguf};
use crate::tokens::prompt_text;
use crate::tokens::prompt_tokens;

fn options(args: &Args) -> ForwardOptions {
    ForwardOptions {
        no_qat_sim: args.no_qat_sim,
    }
}

fn load(args: &Args) -> Result<(std::path::PathBuf, Model)> {
    let path = resolve_model(args)?;
    let model = crate::generate::open_model(&path)?;
    Ok((path, model))
}

/// Runs `tokens` from an empty cache in chunks and hands every position's
/// logits (predicting the next token) to `each`.
fn teacher_forced(
    model: &Model,
    tokens: &[u32],
    chunk: usize,
    opts: ForwardOptions,
    mut each: impl FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let mut cache = model.new_cache();
    let mut pos = 0;
    for c in tokens.chunks(chunk.max(1)) {
        for row in model.forward_batch(&mut cache, c, opts, LogitsFor::All, None)? {
            each(pos, &row)?;
            pos += 1;
        }
    }
    Ok(())
}

pub fn dump_logits(args: &Args, out: &Path) -> Result<()> {
    let ids_path = args
        .prompt_tokens
        .as_deref()
        .context("--dump-logits needs --prompt-tokens IDS.json")?;
    let text = std::fs::read_to_string(ids_path)
        .with_context(|| format!("cannot read {}", ids_path.display()))?;
    let tokens: Vec<u32> = serde_json::from_str(&text)
        .with_context(|| format!("{}: expected a JSON array of token ids", ids_path.display()))?;
    if tokens.is_empty() {
        bail!("{}: no tokens", ids_path.display());
    }
    let (_, model) = load(args)?;
    if tokens.len() > args.ctx as usize {
        bail!(
            "{} tokens exceed the context ({}); raise -c",
            tokens.len(),
            args.ctx
        );
    }
    let mut w = BufWriter::new(
        File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    let mut vocab = 0;
    teacher_forced(
        &model,
        &tokens,
        args.prefill_chunk as usize,
        options(args),
        |_, row| {
            vocab = row.len();
            for x in row {
                w.write_all(&x.to_le_bytes())?;
            }
            Ok(())
        },
    )?;
    w.flush()?;
    eprintln!(
        "ds4: wrote {} × {vocab} f32 logits to {}",
        tokens.len(),
        out.display()
    );
    Ok(())
}

/// log(Σ exp(x)) in f64, as ds4 computes it for logprobs.
fn logsumexp(xs: &[f32]) -> f64 {
    let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + xs.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln()
}

/// C's `%.9g`, which ds4 uses for every number in its JSON.
pub fn fmt_g9(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let sci = format!("{x:.8e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: String| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    if !(-4..9).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mant.to_string()), exp.abs())
    } else {
        trim(format!("{x:.prec$}", prec = (8 - exp).max(0) as usize))
    }
}

/// ds4's token object: `text` is the piece as JSON, with every byte ≥ 0x80 of an
/// invalid UTF-8 piece written as `\u00XX`; `bytes` is authoritative.
fn token_json(tok: &Tokenizer, id: u32) -> String {
    let bytes = tok.token_bytes(id).unwrap_or_default();
    let text = match std::str::from_utf8(bytes) {
        Ok(s) => serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()),
        Err(_) => {
            let mut s = String::from("\"");
            for &b in bytes {
                match b {
                    b'"' => s.push_str("\\\""),
                    b'\\' => s.push_str("\\\\"),
                    0x20..=0x7e => s.push(b as char),
                    _ => s.push_str(&format!("\\u{b:04x}")),
                }
            }
            s.push('"');
            s
        }
    };
    let bytes: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
    format!(
        "{{\"id\":{id},\"text\":{text},\"bytes\":[{}]}}",
        bytes.join(",")
    )
}

pub fn dump_logprobs(args: &Args, out: &Path) -> Result<()> {
    let text = prompt_text(args)?;
    let (path, model) = load(args)?;
    let tok = tokenizer_from_gguf(&path)?;
    let prompt = prompt_tokens(&tok, args, &text)?;
    let ctx = args.ctx as usize;
    if prompt.len() >= ctx {
        bail!(
            "the prompt has {} tokens but the context is {ctx} (raise -c)",
            prompt.len()
        );
    }
    let mut session = Session::new(&model, ctx, options(args));
    session.set_prefill_chunk(args.prefill_chunk as usize);
    prefill(&mut session, &prompt, args.prefill_chunk as usize)?;
    let steps = (args.tokens as usize).min(ctx - prompt.len() - 1);
    let k = args.logprobs_top_k as usize;
    let eos = tok.eos();
    let mut json = format!(
        "{{\"source\":\"ds4\",\"prompt_tokens\":{},\"ctx\":{ctx},\"top_k\":{k},\"steps\":[",
        prompt.len()
    );
    let mut logits = session.logits()?.to_vec();
    for step in 0..steps {
        let lse = logsumexp(&logits);
        let selected = argmax(&logits).context("the model produced no finite logit")?;
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let by = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        let kk = k.min(order.len());
        order.select_nth_unstable_by(kk - 1, by);
        order.truncate(kk);
        order.sort_unstable_by(by);
        if step > 0 {
            json.push(',');
        }
        json.push_str(&format!(
            "{{\"step\":{step},\"selected\":{},\"top_logprobs\":[",
            token_json(&tok, selected)
        ));
        for (i, id) in order.iter().enumerate() {
            let logit = logits[*id as usize] as f64;
            if i > 0 {
                json.push(',');
            }
            json.push_str(&format!(
                "{{\"token\":{},\"logit\":{},\"logprob\":{}}}",
                token_json(&tok, *id),
                fmt_g9(logit),
                fmt_g9(logit - lse)
            ));
        }
        json.push_str("]}");
        if selected == eos || step + 1 == steps {
            break;
        }
        logits = session.decode(selected)?.to_vec();
    }
    json.push_str("]}\n");
    std::fs::write(out, json).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// ds4 scores after a fixed 32-token seed prefix.
const PPL_SEED: usize = 32;

pub fn perplexity(args: &Args, file: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let (path, model) = load(args)?;
    let tok = tokenizer_from_gguf(&path)?;
    // Raw text: no chat template, and special-token text in it is plain text.
    let tokens = tok.encode(&text, SpecialMode::Raw);
    if tokens.len() <= PPL_SEED {
        bail!(
            "{}: {} tokens; perplexity needs more than {PPL_SEED}",
            file.display(),
            tokens.len()
        );
    }
    let ctx = args.ctx as usize;
    if ctx <= PPL_SEED {
        bail!("the context ({ctx}) must exceed the {PPL_SEED}-token seed prefix");
    }
    let scored = (args.tokens as usize)
        .min(tokens.len() - PPL_SEED)
        .min(ctx - PPL_SEED);
    let used = &tokens[..PPL_SEED + scored];
    let mut nll = 0f64;
    teacher_forced(
        &model,
        &used[..used.len() - 1],
        args.prefill_chunk as usize,
        options(args),
        |pos, row| {
            if pos + 1 >= PPL_SEED {
                nll += logsumexp(row) - row[used[pos + 1] as usize] as f64;
            }
            Ok(())
        },
    )?;
    let avg = nll / scored as f64;
    println!(
        "tokens={} scored={scored} nll={nll:.9} avg_nll={avg:.9} ppl={:.9}",
        tokens.len(),
        avg.exp()
    );
    Ok(())
}

/// ds4's test-vector comparison (`--logprob-vectors`), applied to two files in
/// `--dump-logprobs` format: at every step of `reference`, the candidate's
/// greedy token must have the same bytes, and every reference alternative must
/// be among the candidate's alternatives (by bytes) within `tolerance` nats.
pub fn compare_logprobs(reference: &str, candidate: &str, tolerance: f64) -> Result<usize> {
    fn bytes(t: &serde_json::Value) -> Result<Vec<u8>> {
        t["bytes"]
            .as_array()
            .context("token without a bytes array")?
            .iter()
            .map(|b| {
                b.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .context("bad byte")
            })
            .collect()
    }
    let r: serde_json::Value = serde_json::from_str(reference).context("reference is not JSON")?;
    let c: serde_json::Value = serde_json::from_str(candidate).context("candidate is not JSON")?;
    let rs = r["steps"].as_array().context("reference has no steps")?;
    let cs = c["steps"].as_array().context("candidate has no steps")?;
    for (i, rstep) in rs.iter().enumerate() {
        let cstep = cs
            .get(i)
            .with_context(|| format!("candidate stops before step {i}"))?;
        if bytes(&rstep["selected"])? != bytes(&cstep["selected"])? {
            bail!(
                "step {i}: greedy token differs: {} vs {}",
                rstep["selected"]["text"],
                cstep["selected"]["text"]
            );
        }
        let local = cstep["top_logprobs"]
            .as_array()
            .context("candidate step without top_logprobs")?;
        for top in rstep["top_logprobs"]
            .as_array()
            .context("reference step without top_logprobs")?
        {
            let want = bytes(&top["token"])?;
            let lp = top["logprob"].as_f64().context("logprob is not a number")?;
            let found = local
                .iter()
                .find(|l| bytes(&l["token"]).map(|b| b == want).unwrap_or(false))
                .with_context(|| {
                    format!(
                        "step {i}: {} is not among the candidate's alternatives",
                        top["token"]["text"]
                    )
                })?;
            let got = found["logprob"]
                .as_f64()
                .context("logprob is not a number")?;
            if (got - lp).abs() > tolerance {
                bail!(
                    "step {i}: {} logprob {got} vs {lp} (tolerance {tolerance})",
                    top["token"]["text"]
                );
            }
        }
    }
    Ok(rs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g9_matches_c() {
        // Values printed by C's printf("%.9g").
        for (x, want) in [
            (1.23f32 as f64, "1.23000002"),
            (-0.5, "-0.5"),
            (123456789.0, "123456789"),
            (1234567890.0, "1.23456789e+09"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (-17.25, "-17.25"),
            (1e300, "1e+300"),
            (0.1, "0.1"),
            (2.0 / 3.0, "0.666666667"),
            (999999999.6, "1e+09"),
        ] {
            assert_eq!(fmt_g9(x), want, "{x}");
        }
    }

    #[test]
    fn logsumexp_is_stable() {
        let v = [1000.0f32, 1000.0];
        assert!((logsumexp(&v) - (1000.0 + 2f64.ln())).abs() < 1e-9);
    }
}
