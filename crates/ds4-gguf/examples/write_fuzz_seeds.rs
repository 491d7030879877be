//! Writes small valid GGUF files to seed the parser fuzzer:
//! `cargo run -p ds4-gguf --example write_fuzz_seeds -- crates/ds4-gguf/fuzz/corpus/parse`

use ds4_gguf::{GgmlType, GgufBuilder, MetaArray, StringArray};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: write_fuzz_seeds OUT_DIR"))?;
    std::fs::create_dir_all(&dir)?;
    let mut seeds: Vec<(&str, GgufBuilder)> = Vec::new();

    seeds.push(("empty", GgufBuilder::new()));

    let mut b = GgufBuilder::new();
    b.add_meta("general.architecture", "deepseek4")?;
    b.add_meta("u8", 1u8)?;
    b.add_meta("i8", -1i8)?;
    b.add_meta("u16", 2u16)?;
    b.add_meta("i16", -2i16)?;
    b.add_meta("u32", 3u32)?;
    b.add_meta("i32", -3i32)?;
    b.add_meta("f32", 0.5f32)?;
    b.add_meta("bool", true)?;
    b.add_meta("u64", 4u64)?;
    b.add_meta("i64", -4i64)?;
    b.add_meta("f64", 0.25f64)?;
    seeds.push(("scalars", b));

    let mut b = GgufBuilder::new();
    b.add_meta(
        "tokens",
        ["a", "Ġb", "<｜User｜>"]
            .into_iter()
            .collect::<StringArray>(),
    )?;
    b.add_meta("merges", vec!["a b", "Ġ b"])?;
    b.add_meta("ints", vec![1i32, -2, 3])?;
    b.add_meta("bools", vec![true, false])?;
    b.add_meta(
        "nested",
        MetaArray::Array(vec![MetaArray::U8(vec![1, 2]), MetaArray::Array(vec![])]),
    )?;
    seeds.push(("arrays", b));

    let mut b = GgufBuilder::new();
    b.set_alignment(8)?;
    b.add_tensor("f32", &[2, 2], GgmlType::F32, vec![0u8; 16])?;
    b.add_tensor("f16", &[3], GgmlType::F16, vec![0u8; 6])?;
    b.add_tensor("q8", &[32], GgmlType::Q8_0, vec![1u8; 34])?;
    b.add_tensor("i32", &[1, 1, 1, 1], GgmlType::I32, vec![2u8; 4])?;
    seeds.push(("tensors", b));

    let mut b = GgufBuilder::new();
    b.add_meta("general.name", "k-quants")?;
    b.add_tensor("q2k", &[256], GgmlType::Q2K, vec![3u8; 84])?;
    b.add_tensor("q4k", &[256], GgmlType::Q4K, vec![4u8; 144])?;
    b.add_tensor("iq2", &[256], GgmlType::Iq2Xxs, vec![5u8; 66])?;
    seeds.push(("kquants", b));

    for (name, b) in seeds {
        let path = format!("{dir}/{name}.gguf");
        b.write_file(&path)?;
        println!("{path}");
    }
    Ok(())
}
