//! Times opening a GGUF that carries the real DeepSeek V4 vocabulary
//! (129,280 tokens, 127,741 merges) as string arrays, as the model file does.
//! Run in release: `cargo run --release -p ds4-gguf --example bench_load [TOKENIZER.json.gz]`.

use std::io::Read;
use std::time::{Duration, Instant};

use ds4_gguf::{GgmlType, GgufBuilder, GgufFile, StringArray};

const VOCAB: usize = 129_280;

fn main() -> anyhow::Result<()> {
    // Optional argument: another tokenizer.json.gz (default: the bundled one).
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../assets/tokenizer/deepseek-v4-tokenizer.json.gz")
        });
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path)?).read_to_string(&mut text)?;
    let tok: serde_json::Value = serde_json::from_str(&text)?;

    let mut tokens = vec![String::new(); VOCAB];
    let vocab = tok["model"]["vocab"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("no vocab"))?;
    let added = tok["added_tokens"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no added_tokens"))?;
    let ids = vocab.iter().map(|(s, id)| (s.as_str(), id.as_u64())).chain(
        added
            .iter()
            .map(|t| (t["content"].as_str().unwrap_or(""), t["id"].as_u64())),
    );
    for (s, id) in ids {
        if let Some(slot) = id.and_then(|i| tokens.get_mut(i as usize)) {
            *slot = s.to_owned();
        }
    }
    let merges: StringArray = tok["model"]["merges"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no merges"))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            // Newer tokenizer.json files store merges as [left, right] pairs.
            other => other
                .as_array()
                .map(|p| {
                    p.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
        })
        .collect();

    let mut b = GgufBuilder::new();
    b.add_meta("general.architecture", "deepseek4")?;
    b.add_meta(
        "tokenizer.ggml.tokens",
        tokens.iter().collect::<StringArray>(),
    )?;
    b.add_meta("tokenizer.ggml.merges", merges.clone())?;
    b.add_tensor(
        "output_norm.weight",
        &[4096],
        GgmlType::F32,
        vec![0u8; 4 * 4096],
    )?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("vocab.gguf");
    b.write_file(&file)?;
    let size = std::fs::metadata(&file)?.len();

    let mut times: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let f = GgufFile::open(&file)?;
        let n = f.get_str_array("tokenizer.ggml.tokens")?.len()
            + f.get_str_array("tokenizer.ggml.merges")?.len();
        times.push(t0.elapsed());
        anyhow::ensure!(n == VOCAB + merges.len());
    }
    times.sort();
    println!(
        "open+parse {size} bytes ({VOCAB} tokens + {} merges): min {:?}, median {:?}, max {:?} over {} runs",
        merges.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
    Ok(())
}
