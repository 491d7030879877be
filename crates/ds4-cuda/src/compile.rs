//! NVRTC compilation for the device's exact architecture, cached on disk.
//!
//! The first run on a machine compiles the program (about a second) and stores the
//! CUBIN under the cache directory; later runs load it. The key covers the program
//! text, the architecture, the NVRTC version and the options (see
//! [`crate::source::cache_key`]), so a changed kernel or toolkit never loads a stale
//! binary.

use std::ffi::{CStr, CString, c_char, c_int};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result as nvrtc, sys as nvrtc_sys};

use crate::CudaError;
use crate::source::cache_key;

/// Where compiled kernels live: `$DS4_CUDA_CACHE`, else the ds4 cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DS4_CUDA_CACHE") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("DS4_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("ds4")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ds4")))
        .unwrap_or_else(|| std::env::temp_dir().join("ds4"));
    base.join("cuda-kernels")
}

pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    let (mut a, mut b): (c_int, c_int) = (0, 0);
    unsafe { nvrtc_sys::nvrtcVersion(&mut a, &mut b) }
        .result()
        .map_err(|e| CudaError::Compile(format!("nvrtcVersion: {e:?}")))?;
    Ok((a, b))
}

/// Returns the CUBIN of `program` for `arch` (e.g. `sm_90a`), from the cache or
/// freshly compiled, and whether it came from the cache.
pub fn cubin(program: &str, arch: &str, dir: &Path) -> Result<(Vec<u8>, bool), CudaError> {
    let opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
    ];
    let key = cache_key(program, arch, nvrtc_version()?, &opts);
    let path = dir.join(format!("ds4-{arch}-{key}.cubin"));
    if let Ok(bin) = std::fs::read(&path)
        && !bin.is_empty()
    {
        return Ok((bin, true));
    }
    let bin = compile(program, &opts)?;
    // Best effort: a read-only cache only costs a recompile next time. Written to a
    // temporary name then renamed so a concurrent reader never sees half a file.
    if std::fs::create_dir_all(dir).is_ok() {
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, &bin).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok((bin, false))
}

/// Compiles `program` for `arch` with ptxas's verbose report and returns the log
/// (registers, shared memory and spills of every kernel); needs NVRTC only, no GPU.
pub fn ptxas_report(program: &str, arch: &str) -> Result<String, CudaError> {
    let opts = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
        "--ptxas-options=-v".to_string(),
    ];
    compile_with_log(program, &opts).map(|(_, log)| log)
}

fn compile(program: &str, opts: &[String]) -> Result<Vec<u8>, CudaError> {
    compile_with_log(program, opts).map(|(bin, _)| bin)
}

fn compile_with_log(program: &str, opts: &[String]) -> Result<(Vec<u8>, String), CudaError> {
    let src = CString::new(program).map_err(|_| CudaError::Compile("NUL in source".into()))?;
    let name = c"ds4.cu";
    let prog = nvrtc::create_program(&src, Some(name))
        .map_err(|e| CudaError::Compile(format!("nvrtcCreateProgram: {e:?}")))?;
    let res = unsafe { nvrtc::compile_program(prog, opts) };
    let log = unsafe { nvrtc::get_program_log(prog) }
        .map(|l| {
            unsafe { CStr::from_ptr(l.as_ptr()) }
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let out = match res {
        Err(e) => Err(CudaError::Compile(format!("{e:?}\n{log}"))),
        Ok(()) => {
            let mut size = 0usize;
            let r = unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size) }.result();
            match r {
                Err(e) => Err(CudaError::Compile(format!("nvrtcGetCUBINSize: {e:?}"))),
                Ok(()) => {
                    let mut bin = vec![0u8; size];
                    unsafe { nvrtc_sys::nvrtcGetCUBIN(prog, bin.as_mut_ptr() as *mut c_char) }
                        .result()
                        .map(|_| (bin, log))
                        .map_err(|e| CudaError::Compile(format!("nvrtcGetCUBIN: {e:?}")))
                }
            }
        }
    };
    let _ = unsafe { nvrtc::destroy_program(prog) };
    out
}
