//! Parser fuzz target: any input must parse or fail with an error (never
//! panic, never read out of bounds), and whatever parses must survive a
//! write → read → write cycle unchanged.
#![no_main]

use ds4_gguf::{GgufBuilder, GgufFile};
use libfuzzer_sys::fuzz_target;

fn rebuild(f: &GgufFile) -> Vec<u8> {
    // A parsed file always has unique keys and valid tensors, and writing
    // to memory cannot fail.
    GgufBuilder::from_file(f)
        .and_then(|b| b.to_bytes())
        .expect("a parsed file can be rewritten")
}

fuzz_target!(|data: &[u8]| {
    let Ok(f) = GgufFile::from_bytes(data) else {
        return;
    };
    // Touch every accessor that reads the mapping.
    for t in f.tensors() {
        let bytes = f.tensor_data(t);
        assert_eq!(bytes.len() as u64, t.n_bytes);
        let _ = f.tensor_f32(t);
        let _ = f.tensor_f16(t);
        let _ = f.tensor_i64(t);
        assert!(std::ptr::eq(f.tensor(&t.name).unwrap(), t));
    }
    for (k, v) in f.metadata().iter() {
        let _ = v.to_string();
        let _ = f.get_uint(k);
        let _ = f.get_str_array(k);
    }
    let once = rebuild(&f);
    let g = GgufFile::from_bytes(&once).expect("our own output must parse");
    assert_eq!(rebuild(&g), once);
});
