//! Writes a GGUF covering every metadata value type and every ggml tensor
//! type, plus a JSON manifest, for llama.cpp's reference reader to verify:
//!
//! ```text
//! cargo run -p ds4-gguf --example write_interop -- OUT.gguf OUT.json
//! .venv/bin/python tools/check_gguf_interop.py OUT.gguf OUT.json
//! ```

#[path = "../tests/common/interop.rs"]
mod interop;
#[path = "../tests/common/manifest.rs"]
mod manifest;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [gguf_path, json_path] = args.as_slice() else {
        anyhow::bail!("usage: write_interop OUT.gguf OUT.json");
    };
    println!("{}", interop::write_interop(gguf_path, json_path)?);
    Ok(())
}
