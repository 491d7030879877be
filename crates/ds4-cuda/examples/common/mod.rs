//! What the ds4-cuda examples share: flag values, and the exits a tool run by hand or by a
//! bench script wants (a usage line, SKIP without a GPU, one line naming what failed).

use std::path::Path;

use ds4_cuda::CudaBackend;
use ds4_engine::Model;

/// The value after `name` in `args`, else `default` (also when it does not parse).
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The model path (the first argument; exits 2 with `usage` without it). Prints `SKIP: …`
/// and returns None where no usable CUDA device is present.
pub fn model_path(args: &[String], usage: &str) -> Option<String> {
    let Some(path) = args.get(1) else {
        eprintln!("usage: {usage}");
        std::process::exit(2);
    };
    if let Err(e) = ds4_cuda::available() {
        println!("SKIP: {e}");
        return None;
    }
    Some(path.clone())
}

/// The model at `path`; exits 1 with the path and the error when it cannot be opened.
pub fn open_model(path: &str) -> Model {
    Model::open(Path::new(path)).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1)
    })
}

/// `model` on GPU 0 for contexts up to `ctx` and runs of up to `batch` tokens; exits 1
/// with the error when it does not load.
pub fn load_gpu(model: &Model, ctx: usize, batch: usize) -> CudaBackend {
    CudaBackend::load(model, 0, ctx, batch, &mut |_, _| {}).unwrap_or_else(|e| {
        eprintln!("cuda: {e}");
        std::process::exit(1)
    })
}
