//! One GPU: its context, the loaded kernels, plain device allocations and launches.
//!
//! Memory is taken with plain `cuMemAlloc` (never managed memory) and addressed by
//! raw device pointers, which is what the kernels take; a [`DevBuf`] frees its
//! allocation when dropped. All work goes to the context's default stream, so a
//! synchronous copy back to the host waits for every launch before it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaEvent, CudaFunction, CudaStream, result, sys};
use cudarc::nvrtc::Ptx;

use crate::CudaError;
use crate::compile;
use crate::source::{KERNEL_NAMES, program};

fn drv(what: &str) -> impl Fn(result::DriverError) -> CudaError + '_ {
    move |e| CudaError::Driver(format!("{what}: {e}"))
}

/// Whether a CUDA driver and NVRTC can be loaded on this machine, without touching
/// a device (cudarc panics rather than erring when the library is absent).
pub fn libraries_present() -> Result<(), CudaError> {
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver(
            "the CUDA driver library (libcuda) was not found".into(),
        ));
    }
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::NoDriver(
            "NVRTC (libnvrtc, part of the CUDA toolkit) was not found".into(),
        ));
    }
    Ok(())
}

pub struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    pub name: String,
    pub arch: String,
    pub total_mem: usize,
    /// Streaming multiprocessors (grids sized to one wave of resident blocks).
    pub sms: u32,
    /// Whether the kernels came from the on-disk cache.
    pub kernels_cached: bool,
    /// When set, every launch is bracketed by events (see [`Gpu::set_profiling`]).
    prof: Option<Arc<Mutex<Vec<TimedLaunch>>>>,
    /// Programmatic dependent launch (Hopper on): a kernel's blocks may be scheduled
    /// while the previous kernel still runs; every kernel waits (`griddepcontrol.wait`)
    /// before it touches step data, so results are unchanged and only the gaps between
    /// dependent kernels shrink (see pdl_begin in ds4.cu). `DS4_CUDA_PDL=0` turns it off.
    pdl: AtomicBool,
}

/// A profiled launch: kernel name, events before and after.
type TimedLaunch = (&'static str, CudaEvent, CudaEvent);

/// GPU time of one kernel name over a profiled stretch.
#[derive(Debug, Clone)]
pub struct KernelTime {
    pub name: &'static str,
    pub launches: usize,
    pub ms: f64,
}

/// Launches summed by kernel name, largest first.
pub fn by_kernel(launches: &[(&'static str, f64)]) -> Vec<KernelTime> {
    let mut by: Vec<KernelTime> = Vec::new();
    for &(name, ms) in launches {
        match by.iter_mut().find(|k| k.name == name) {
            Some(k) => {
                k.launches += 1;
                k.ms += ms;
            }
            None => by.push(KernelTime {
                name,
                launches: 1,
                ms,
            }),
        }
    }
    by.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    by
}

impl Gpu {
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        libraries_present()?;
        let count = std::panic::catch_unwind(CudaContext::device_count)
            .map_err(|_| CudaError::NoDriver("the CUDA driver failed to initialize".into()))?
            .map_err(drv("device count"))?;
        if count <= 0 || ordinal >= count as usize {
            return Err(CudaError::NoDriver(format!(
                "no CUDA device {ordinal} ({count} present)"
            )));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv("context"))?;
        // Work is ordered on one stream; cudarc's per-buffer event tracking is not needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let (maj, min) = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        // Hopper gets its arch-specific target (wgmma, TMA) for the speed work.
        let arch = if maj == 9 && min == 0 {
            "sm_90a".to_string()
        } else {
            format!("sm_{maj}{min}")
        };
        let name = ctx.name().map_err(drv("device name"))?;
        let total_mem = ctx.total_mem().map_err(drv("total memory"))?;
        let sms = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(drv("multiprocessor count"))?
            .max(1) as u32;
        let (bin, kernels_cached) = compile::cubin(&program(), &arch, &compile::cache_dir())?;
        let pdl = maj >= 9 && std::env::var("DS4_CUDA_PDL").map_or(true, |v| v != "0");
        let module = ctx
            .load_module(Ptx::from_binary(bin))
            .map_err(drv("load module"))?;
        let mut funcs = HashMap::new();
        for &n in KERNEL_NAMES {
            funcs.insert(n, module.load_function(n).map_err(drv(n))?);
        }
        Ok(Gpu {
            ctx,
            stream,
            funcs,
            name,
            arch,
            total_mem,
            sms,
            kernels_cached,
            prof: None,
            pdl: AtomicBool::new(pdl),
        })
    }

    /// The same kernels, launched on `stream` (graph capture needs a stream other than
    /// the legacy default one).
    pub fn on_stream(&self, stream: Arc<CudaStream>) -> Gpu {
        Gpu {
            ctx: self.ctx.clone(),
            stream,
            funcs: self.funcs.clone(),
            name: self.name.clone(),
            arch: self.arch.clone(),
            total_mem: self.total_mem,
            sms: self.sms,
            kernels_cached: self.kernels_cached,
            prof: self.prof.clone(),
            pdl: AtomicBool::new(self.pdl()),
        }
    }

    /// The same GPU and stream with programmatic dependent launch on or off for the
    /// launches made through the copy (the original keeps its setting).
    pub fn with_pdl(&self, on: bool) -> Gpu {
        let g = self.on_stream(self.stream.clone());
        g.set_pdl(on);
        g
    }

    /// Whether launches let the next kernel start early (see the `pdl` field).
    pub fn pdl(&self) -> bool {
        self.pdl.load(Ordering::Relaxed)
    }

    /// Turns programmatic dependent launch on (where the GPU has it: compute
    /// capability 9.0 and later) or off.
    pub fn set_pdl(&self, on: bool) {
        let major: u32 = self
            .arch
            .trim_start_matches("sm_")
            .trim_end_matches('a')
            .parse::<u32>()
            .map_or(0, |v| v / 10);
        self.pdl.store(on && major >= 9, Ordering::Relaxed);
    }

    /// Launches `name` with `params` (pointers to each argument, in the kernel's
    /// order) on this GPU's stream.
    ///
    /// # Safety
    /// `params` must match the kernel's parameter list in number, order and types, and
    /// every pointer in it must stay valid for the duration of the call.
    pub unsafe fn launch_raw(
        &self,
        name: &'static str,
        grid: (u32, u32, u32),
        block: u32,
        shmem: u32,
        params: &mut [*mut std::ffi::c_void],
    ) -> Result<(), CudaError> {
        if what_if_skipped(name) {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let cfg = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: shmem,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: self.pdl() as u32,
        };
        let t0 = self.prof_begin()?;
        unsafe {
            sys::cuLaunchKernelEx(
                &cfg,
                self.func(name).cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .map_err(|e| CudaError::Driver(format!("launch {name}: {e}")))?;
        self.prof_end(name, t0)
    }

    /// Turns per-launch timing on (events around every launch; slows launches) or off.
    pub fn set_profiling(&mut self, on: bool) {
        self.prof = on.then(Default::default);
    }

    pub fn profiling(&self) -> bool {
        self.prof.is_some()
    }

    /// Event marking the start of a profiled launch (None when not profiling).
    pub fn prof_begin(&self) -> Result<Option<CudaEvent>, CudaError> {
        match &self.prof {
            None => Ok(None),
            Some(_) => self
                .stream
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map(Some)
                .map_err(drv("event")),
        }
    }

    pub fn prof_end(&self, name: &'static str, start: Option<CudaEvent>) -> Result<(), CudaError> {
        if let (Some(p), Some(start)) = (&self.prof, start) {
            let end = self
                .stream
                .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("event"))?;
            p.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((name, start, end));
        }
        Ok(())
    }

    /// Per-kernel GPU time since the last call (waits for the queued work), largest
    /// first.
    pub fn take_profile(&self) -> Result<Vec<KernelTime>, CudaError> {
        Ok(by_kernel(&self.take_launches()?))
    }

    /// Every profiled launch since the last call, in launch order: kernel name and GPU
    /// milliseconds (waits for the queued work).
    pub fn take_launches(&self) -> Result<Vec<(&'static str, f64)>, CudaError> {
        let Some(p) = &self.prof else {
            return Ok(Vec::new());
        };
        self.sync()?;
        let recs = std::mem::take(&mut *p.lock().unwrap_or_else(|e| e.into_inner()));
        recs.into_iter()
            .map(|(name, a, b)| Ok((name, a.elapsed_ms(&b).map_err(drv("elapsed"))? as f64)))
            .collect()
    }

    pub fn func(&self, name: &str) -> &CudaFunction {
        // KERNEL_NAMES is checked against the source by a unit test, and every name
        // in it was loaded in `open`.
        &self.funcs[name]
    }

    pub fn free_mem(&self) -> Result<usize, CudaError> {
        Ok(self.ctx.mem_get_info().map_err(drv("memory info"))?.0)
    }

    pub fn alloc(&self, bytes: usize) -> Result<DevBuf, CudaError> {
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        let n = bytes.max(16);
        let ptr = unsafe { result::malloc_sync(n) }.map_err(|e| CudaError::OutOfMemory {
            bytes: n,
            msg: e.to_string(),
        })?;
        unsafe { result::memset_d8_sync(ptr, 0, n) }.map_err(drv("memset"))?;
        Ok(DevBuf {
            ctx: self.ctx.clone(),
            ptr,
            bytes,
        })
    }

    pub fn upload<T: Copy>(&self, host: &[T]) -> Result<DevBuf, CudaError> {
        let buf = self.alloc(std::mem::size_of_val(host))?;
        if !host.is_empty() {
            unsafe { result::memcpy_htod_sync(buf.ptr, host) }.map_err(drv("upload"))?;
        }
        Ok(buf)
    }

    /// Copies `host` to `dst + offset bytes`.
    pub fn write<T: Copy>(&self, dst: u64, host: &[T]) -> Result<(), CudaError> {
        if host.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        unsafe { result::memcpy_htod_sync(dst, host) }.map_err(drv("write"))
    }

    /// Copies `out.len()` values from `src` (waits for the work queued before).
    pub fn read<T: Copy>(&self, src: u64, out: &mut [T]) -> Result<(), CudaError> {
        if out.is_empty() {
            return Ok(());
        }
        self.ctx.bind_to_thread().map_err(drv("bind"))?;
        unsafe { result::memcpy_dtoh_sync(out, src) }.map_err(drv("read"))
    }

    pub fn sync(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(drv("synchronize"))
    }

    /// Blocks of `name` (with `threads` threads and `shm` bytes of dynamic shared memory)
    /// the whole GPU holds at once: one wave.
    pub fn resident_blocks(&self, name: &str, threads: u32, shm: usize) -> Result<u32, CudaError> {
        let per_sm = self
            .func(name)
            .occupancy_max_active_blocks_per_multiprocessor(threads, shm, None)
            .map_err(drv("occupancy"))?;
        Ok(per_sm.max(1) * self.sms)
    }

    /// Lets `name` launch clusters of more than 8 blocks (the H100/H200 take 16).
    pub fn allow_large_clusters(&self, name: &str) -> Result<(), CudaError> {
        self.func(name)
            .set_attribute(
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
                1,
            )
            .map_err(drv("cluster size attribute"))
    }

    /// Lets `name` use up to `bytes` of dynamic shared memory. Past 48 KiB in all —
    /// the kernel's static shared memory counts too — a launch needs the opt-in.
    pub fn allow_shared(&self, name: &str, bytes: usize) -> Result<(), CudaError> {
        if bytes == 0 {
            return Ok(());
        }
        let f = self.func(name);
        let fixed = f
            .shared_size_bytes()
            .map_err(drv("shared memory size"))?
            .max(0) as usize;
        if bytes + fixed <= 48 * 1024 {
            return Ok(());
        }
        f.set_attribute(
            sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(drv("shared memory attribute"))
    }
}

/// A device allocation, freed on drop.
pub struct DevBuf {
    ctx: Arc<CudaContext>,
    pub ptr: u64,
    pub bytes: usize,
}

impl DevBuf {
    /// Pointer `off` elements of `T` into the buffer.
    pub fn at<T>(&self, off: usize) -> u64 {
        self.ptr + (off * std::mem::size_of::<T>()) as u64
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            let _ = unsafe { result::free_sync(self.ptr) };
        }
    }
}

thread_local! {
    static CAPTURING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks this thread as capturing a decode graph (see `what_if_skipped`).
pub fn set_capturing(on: bool) {
    CAPTURING.with(|c| c.set(on));
}

/// A diagnostic for locating a decode step's critical path: `DS4_CUDA_WHATIF_SKIP=a,b`
/// leaves the kernels named a and b out of the captured decode graph (only there: a
/// prefill or a plain launch still runs them, so every buffer holds valid indices from
/// earlier steps). How much faster the step gets says what those kernels cost on its
/// critical path; its results are wrong, and a warning says so once.
fn what_if_skipped(name: &str) -> bool {
    if !CAPTURING.with(|c| c.get()) {
        return false;
    }
    let skip = what_if_list().read().unwrap_or_else(|e| e.into_inner());
    !skip.is_empty() && skip.iter().any(|s| s == name)
}

fn what_if_list() -> &'static std::sync::RwLock<Vec<String>> {
    static SKIP: std::sync::OnceLock<std::sync::RwLock<Vec<String>>> = std::sync::OnceLock::new();
    SKIP.get_or_init(|| {
        let v: Vec<String> = std::env::var("DS4_CUDA_WHATIF_SKIP")
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if !v.is_empty() {
            eprintln!(
                "ds4-cuda: DS4_CUDA_WHATIF_SKIP={} — decode results are wrong (timing only)",
                v.join(",")
            );
        }
        std::sync::RwLock::new(v)
    })
}

/// Replaces the what-if list (see `what_if_skipped`) for the decode graphs captured from
/// now on: a timing tool sweeps kernels in one process (cuda_step `--whatif`). The
/// results of a graph captured with a non-empty list are wrong.
pub fn set_what_if_skip(names: &[&str]) {
    let mut skip = what_if_list().write().unwrap_or_else(|e| e.into_inner());
    *skip = names.iter().map(|s| (*s).to_owned()).collect();
}

/// Launches kernel `$name` on `$gpu` with a grid, block size, dynamic shared bytes
/// and the kernel's arguments in order (device pointers as `u64`).
#[macro_export]
macro_rules! launch {
    ($gpu:expr, $name:expr, $grid:expr, $block:expr, $shm:expr; $($arg:expr),* $(,)?) => {{
        let gpu: &$crate::device::Gpu = $gpu;
        let mut params: Vec<*mut std::ffi::c_void> = Vec::new();
        // Each argument is bound to its own (shadowed, not dropped) local, which lives
        // until the end of this block, past the launch that reads it.
        $( let a = $arg; params.push(&a as *const _ as *mut std::ffi::c_void); )*
        // SAFETY: every kernel takes exactly the arguments pushed here, in order, as
        // its extern "C" signature in ds4.cu declares them (device pointers as u64).
        let (name, grid, block, shm): (&'static str, (u32, u32, u32), u32, u32) =
            ($name, $grid, $block, $shm);
        unsafe { gpu.launch_raw(name, grid, block, shm, &mut params) }
    }};
}

#[cfg(test)]
mod tests {
    use super::by_kernel;

    #[test]
    fn launches_sum_by_kernel_largest_first() {
        let l = [("a", 1.0), ("b", 0.5), ("a", 2.0), ("c", 3.5), ("b", 0.25)];
        let by = by_kernel(&l);
        let got: Vec<(&str, usize, f64)> = by.iter().map(|k| (k.name, k.launches, k.ms)).collect();
        assert_eq!(got, vec![("c", 1, 3.5), ("a", 2, 3.0), ("b", 2, 0.75)]);
    }
}
