//! Which backend runs the model: `--cpu`, `--cuda`, or (neither) CUDA when a GPU
//! and its libraries are present, else the CPU.

use anyhow::Result;
use ds4_cuda::CudaBackend;
use ds4_engine::{Backend, CpuBackend, Model};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

/// The backend the flags ask for. `--cuda` on a machine without a usable GPU is an
/// error that says why; no flag picks CUDA only when it is usable.
pub fn choose(cpu: bool, cuda: bool) -> Result<(Device, bool)> {
    if cpu {
        return Ok((Device::Cpu, true));
    }
    match ds4_cuda::available() {
        Ok(()) => Ok((Device::Cuda, cuda)),
        Err(e) if cuda => anyhow::bail!("--cuda: {e}"),
        Err(_) => Ok((Device::Cpu, false)),
    }
}

/// A model bound to its backend.
pub enum Loaded<'m> {
    Cpu(CpuBackend<'m>),
    Cuda(Box<CudaBackend>),
}

impl Loaded<'_> {
    pub fn backend(&self) -> &dyn Backend {
        match self {
            Loaded::Cpu(b) => b,
            Loaded::Cuda(b) => b.as_ref(),
        }
    }

    /// Tokens per prefill batch: the GPU's (chosen at load when asked), else ds4's.
    pub fn batch(&self) -> usize {
        match self {
            Loaded::Cpu(_) => ds4_engine::session::DEFAULT_PREFILL_CHUNK,
            Loaded::Cuda(b) => b.max_batch(),
        }
    }
}

/// `batch` for [`load`]: choose by the GPU's free memory (see
/// `ds4_cuda::AUTO_BATCHES`); the CPU takes ds4's 2,048.
pub const AUTO_BATCH: usize = 0;

/// Binds `model` to the chosen backend. Weights go to the GPU with a progress bar;
/// when CUDA was picked by default and the model does not fit, the CPU runs it
/// (saying so); with an explicit `--cuda` that is an error. `batch` is the longest
/// prefill run, [`AUTO_BATCH`] to let the GPU's free memory decide.
pub fn load<'m>(
    model: &'m Model,
    flags: (bool, bool),
    ctx: usize,
    batch: usize,
) -> Result<Loaded<'m>> {
    let (dev, explicit) = choose(flags.0, flags.1)?;
    if dev == Device::Cpu {
        return Ok(Loaded::Cpu(CpuBackend { model }));
    }
    let bar = ProgressBar::new(model.cfg.n_layer as u64);
    bar.set_style(
        ProgressStyle::with_template("uploading weights to the GPU: layer {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let r = CudaBackend::load(model, 0, ctx, batch, &mut |i, _| bar.set_position(i as u64));
    bar.finish_and_clear();
    match r {
        Ok(b) => {
            eprintln!(
                "ds4: {} ({}), weights uploaded in {:.1} s, kernels {}, prefill batches of {} tokens{}",
                b.gpu.name,
                b.gpu.arch,
                b.upload_s,
                if b.gpu.kernels_cached {
                    "from the cache"
                } else {
                    "compiled"
                },
                b.max_batch(),
                if batch == AUTO_BATCH {
                    " (chosen by free GPU memory)"
                } else {
                    ""
                }
            );
            Ok(Loaded::Cuda(Box::new(b)))
        }
        Err(e) if !explicit => {
            eprintln!("ds4: CUDA not used: {e}; running on the CPU");
            Ok(Loaded::Cpu(CpuBackend { model }))
        }
        Err(e) => Err(anyhow::anyhow!("--cuda: {e}")),
    }
}
