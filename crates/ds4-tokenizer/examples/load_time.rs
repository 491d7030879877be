//! Measures vocabulary load time (run in release):
//! `cargo run --release -p ds4-tokenizer --example load_time`.
//! Prints the time of `from_json` on the bundled tokenizer.json and of `from_gguf_parts`
//! on the same vocabulary as GGUF metadata would carry it (string arrays).

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use ds4_tokenizer::Tokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // DS4_TOKENIZER_JSON_GZ lets a copied binary run away from the source tree.
    let path = std::env::var_os("DS4_TOKENIZER_JSON_GZ")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../assets/tokenizer/deepseek-v4-tokenizer.json.gz")
        });
    let gz = std::fs::read(path)?;
    let mut json = String::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut json)?;

    // The first load also builds the process-wide Unicode class table.
    for round in 0..3 {
        let t = Instant::now();
        let tok = Tokenizer::from_json(&json)?;
        println!("from_json (round {round}): {:?}", t.elapsed());
        if round == 2 {
            let tokens: Vec<&str> = (0..tok.vocab_size() as u32)
                .map(|id| tok.token_to_piece(id).unwrap_or(""))
                .collect();
            let value: serde_json::Value = serde_json::from_str(&json)?;
            let merges: Vec<&str> = value["model"]["merges"]
                .as_array()
                .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
                .unwrap_or_default();
            for r in 0..3 {
                let t = Instant::now();
                let g = Tokenizer::from_gguf_parts(&tokens, &merges, None)?;
                println!("from_gguf_parts (round {r}): {:?}", t.elapsed());
                assert_eq!(g.vocab_size(), tok.vocab_size());
            }
        }
    }
    Ok(())
}
