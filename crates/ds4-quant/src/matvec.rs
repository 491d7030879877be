//! Matrix × vector for decode: `y[r] = W[r,:] · x` for a row-major weight
//! matrix stored in any supported format.

use std::ops::Range;

use rayon::prelude::*;

use crate::activation::{
    Activations, BlockQ8_0Act, BlockQ8K, quantize_q8_0_activation, quantize_q8_k,
};
use crate::kernels::{KernelPath, scalar, selected_path};
use crate::{GgmlType, QuantError, Result};

type F32Row = fn(&[u8], &[f32]) -> f32;
type Q8_0Row = fn(&[u8], &[BlockQ8_0Act]) -> f32;
type Q8KRow = fn(&[u8], &[BlockQ8K]) -> f32;

#[derive(Clone, Copy)]
enum RowFn {
    F32(F32Row),
    Q8_0(Q8_0Row),
    Q8K(Q8KRow),
}

/// A weight format bound to its dot kernel on one [`KernelPath`]. Built once
/// per tensor type; the engine calls it without matching on types:
///
/// ```
/// use ds4_quant::{DotKernel, GgmlType, quantize};
/// let (rows, cols) = (4, 256);
/// let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
/// let bytes = quantize(GgmlType::Q2K, &w, cols, None)?;
/// let k = DotKernel::new(GgmlType::Q2K)?;
/// let x = vec![0.5f32; cols];
/// let act = k.quantize_activations(&x)?; // Q8_K, once per vector
/// let mut y = vec![0.0; rows];
/// k.matvec(&bytes, rows, cols, &act, &mut y)?;          // all cores (rayon)
/// k.matvec_rows(&bytes, cols, &act, 1..3, &mut y[1..3])?; // a slice of rows, this thread
/// # Ok::<(), ds4_quant::QuantError>(())
/// ```
#[derive(Clone, Copy)]
pub struct DotKernel {
    ty: GgmlType,
    path: KernelPath,
    f: RowFn,
}

impl std::fmt::Debug for DotKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DotKernel")
            .field("ty", &self.ty)
            .field("path", &self.path)
            .finish()
    }
}

impl DotKernel {
    /// The kernel for `ty` on the selected path (see [`selected_path`]).
    pub fn new(ty: GgmlType) -> Result<Self> {
        Self::with_path(ty, selected_path())
    }

    /// The kernel for `ty` on a specific path (tests, benchmarks).
    pub fn with_path(ty: GgmlType, path: KernelPath) -> Result<Self> {
        if !path.is_available() {
            return Err(QuantError::PathUnavailable(path.name()));
        }
        let f = match path {
            KernelPath::Scalar => scalar_fn(ty),
            #[cfg(target_arch = "x86_64")]
            KernelPath::Avx2 | KernelPath::Avx512 => {
                use crate::kernels::avx2;
                match ty {
                    GgmlType::Q2K if path == KernelPath::Avx512 => {
                        Some(RowFn::Q8K(avx2::dot_q2_k_avx512))
                    }
                    GgmlType::F32 => Some(RowFn::F32(avx2::dot_f32)),
                    GgmlType::F16 => Some(RowFn::F32(avx2::dot_f16)),
                    GgmlType::Bf16 => Some(RowFn::F32(avx2::dot_bf16)),
                    GgmlType::Q8_0 => Some(RowFn::Q8_0(avx2::dot_q8_0)),
                    GgmlType::Q2K => Some(RowFn::Q8K(avx2::dot_q2_k)),
                    GgmlType::Q4K => Some(RowFn::Q8K(avx2::dot_q4_k)),
                    GgmlType::Iq2Xxs => Some(RowFn::Q8K(avx2::dot_iq2_xxs)),
                    _ => None,
                }
            }
            #[cfg(target_arch = "aarch64")]
            KernelPath::Neon => {
                use crate::kernels::neon;
                match ty {
                    GgmlType::F32 => Some(RowFn::F32(neon::dot_f32)),
                    GgmlType::Q8_0 => Some(RowFn::Q8_0(neon::dot_q8_0)),
                    GgmlType::Q2K => Some(RowFn::Q8K(neon::dot_q2_k)),
                    GgmlType::Q4K => Some(RowFn::Q8K(neon::dot_q4_k)),
                    GgmlType::Iq2Xxs => Some(RowFn::Q8K(neon::dot_iq2_xxs)),
                    // F16/BF16 rows have no NEON kernel (Rust's f16 vector
                    // types are unstable); the scalar one is used.
                    _ => scalar_fn(ty),
                }
            }
            #[allow(unreachable_patterns)]
            _ => None,
        };
        let f = f.ok_or(QuantError::Unsupported {
            ty,
            op: "dot product",
        })?;
        Ok(DotKernel { ty, path, f })
    }

    pub fn weight_type(&self) -> GgmlType {
        self.ty
    }

    pub fn path(&self) -> KernelPath {
        self.path
    }

    /// Bytes of one weight row of `cols` elements.
    pub fn row_bytes(&self, cols: usize) -> Result<usize> {
        let bs = self.ty.block_size();
        if !cols.is_multiple_of(bs) {
            return Err(QuantError::NotBlockMultiple {
                ty: self.ty,
                elements: cols,
                block: bs,
            });
        }
        Ok(cols / bs * self.ty.type_size())
    }

    /// Quantize `x` into the activation format this weight type consumes:
    /// Q8_0 blocks for Q8_0, Q8_K for Q2_K/Q4_K/IQ2_XXS, a copy for float
    /// weights. Do this once per vector and reuse it for every matrix of the
    /// same type that multiplies the same vector.
    pub fn quantize_activations(&self, x: &[f32]) -> Result<Activations> {
        Ok(match self.f {
            RowFn::F32(_) => Activations::F32(x.to_vec()),
            RowFn::Q8_0(_) => Activations::Q8_0(quantize_q8_0_activation(x)?),
            RowFn::Q8K(_) => Activations::Q8K(quantize_q8_k(x)?),
        })
    }

    fn check_act(&self, act: &Activations, cols: usize) -> Result<()> {
        let matches = matches!(
            (self.f, act),
            (RowFn::F32(_), Activations::F32(_))
                | (RowFn::Q8_0(_), Activations::Q8_0(_))
                | (RowFn::Q8K(_), Activations::Q8K(_))
        );
        if !matches {
            return Err(QuantError::Unsupported {
                ty: self.ty,
                op: "dot product with activations quantized for another weight type",
            });
        }
        if act.len() != cols {
            return Err(QuantError::Length {
                what: "activation vector",
                expected: cols,
                got: act.len(),
            });
        }
        Ok(())
    }

    /// Dot product of one weight row (whole blocks) with the activations.
    pub fn dot(&self, row: &[u8], act: &Activations) -> Result<f32> {
        let cols = act.len();
        let rb = self.row_bytes(cols)?;
        if row.len() != rb {
            return Err(QuantError::ByteLength {
                ty: self.ty,
                what: "weight row",
                expected: rb,
                got: row.len(),
            });
        }
        self.check_act(act, cols)?;
        Ok(self.dot_unchecked(row, act))
    }

    #[inline]
    fn dot_unchecked(&self, row: &[u8], act: &Activations) -> f32 {
        match (self.f, act) {
            (RowFn::F32(f), Activations::F32(x)) => f(row, x),
            (RowFn::Q8_0(f), Activations::Q8_0(x)) => f(row, x),
            (RowFn::Q8K(f), Activations::Q8K(x)) => f(row, x),
            // check_act rules this out before any caller gets here.
            _ => f32::NAN,
        }
    }

    fn check_matrix(
        &self,
        w: &[u8],
        cols: usize,
        act: &Activations,
        rows: &Range<usize>,
        y: &[f32],
    ) -> Result<usize> {
        let rb = self.row_bytes(cols)?;
        self.check_act(act, cols)?;
        let total_rows = w.len().checked_div(rb).unwrap_or(0);
        if rb == 0 || !w.len().is_multiple_of(rb) {
            return Err(QuantError::ByteLength {
                ty: self.ty,
                what: "weight matrix (whole rows)",
                expected: total_rows * rb,
                got: w.len(),
            });
        }
        if rows.start > rows.end || rows.end > total_rows {
            return Err(QuantError::RowRange {
                start: rows.start,
                end: rows.end,
                rows: total_rows,
            });
        }
        if y.len() != rows.len() {
            return Err(QuantError::Length {
                what: "output slice (one per row in the range)",
                expected: rows.len(),
                got: y.len(),
            });
        }
        Ok(rb)
    }

    /// `y[i] = W[rows.start + i] · x` on the calling thread. `w` is the whole
    /// matrix (whole rows of `cols`), so callers can split rows among their
    /// own workers.
    pub fn matvec_rows(
        &self,
        w: &[u8],
        cols: usize,
        act: &Activations,
        rows: Range<usize>,
        y: &mut [f32],
    ) -> Result<()> {
        let rb = self.check_matrix(w, cols, act, &rows, y)?;
        for (o, r) in y.iter_mut().zip(rows) {
            *o = self.dot_unchecked(&w[r * rb..(r + 1) * rb], act);
        }
        Ok(())
    }

    /// Like [`Self::matvec_rows`], with the rows spread over rayon's pool.
    pub fn matvec_rows_par(
        &self,
        w: &[u8],
        cols: usize,
        act: &Activations,
        rows: Range<usize>,
        y: &mut [f32],
    ) -> Result<()> {
        let rb = self.check_matrix(w, cols, act, &rows, y)?;
        let start = rows.start;
        // Tasks of ≥ 16 rows keep scheduling overhead small next to the row
        // work (a 4096-wide Q8_0 row is 4.3 KB).
        y.par_iter_mut()
            .with_min_len(16)
            .enumerate()
            .for_each(|(i, o)| {
                let r = start + i;
                *o = self.dot_unchecked(&w[r * rb..(r + 1) * rb], act);
            });
        Ok(())
    }

    /// `y = W · x` over all `rows`, in parallel; `w` must hold exactly
    /// `rows` rows.
    pub fn matvec(
        &self,
        w: &[u8],
        rows: usize,
        cols: usize,
        act: &Activations,
        y: &mut [f32],
    ) -> Result<()> {
        let rb = self.row_bytes(cols)?;
        if w.len() != rows * rb {
            return Err(QuantError::ByteLength {
                ty: self.ty,
                what: "weight matrix",
                expected: rows * rb,
                got: w.len(),
            });
        }
        self.matvec_rows_par(w, cols, act, 0..rows, y)
    }
}

fn scalar_fn(ty: GgmlType) -> Option<RowFn> {
    Some(match ty {
        GgmlType::F32 => RowFn::F32(scalar::dot_f32),
        GgmlType::F16 => RowFn::F32(scalar::dot_f16),
        GgmlType::Bf16 => RowFn::F32(scalar::dot_bf16),
        GgmlType::Q8_0 => RowFn::Q8_0(scalar::dot_q8_0),
        GgmlType::Q2K => RowFn::Q8K(scalar::dot_q2_k),
        GgmlType::Q4K => RowFn::Q8K(scalar::dot_q4_k),
        GgmlType::Iq2Xxs => RowFn::Q8K(scalar::dot_iq2_xxs),
        _ => return None,
    })
}

/// `y = W · x` for a `rows × cols` matrix of `ty`: quantizes `x` once into the
/// activation format of `ty`, then runs rows in parallel (rayon).
pub fn matvec(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let k = DotKernel::new(ty)?;
    let act = k.quantize_activations(x)?;
    k.matvec(w, rows, cols, &act, y)
}

/// Single-threaded [`matvec`].
pub fn matvec_serial(
    ty: GgmlType,
    w: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let k = DotKernel::new(ty)?;
    let act = k.quantize_activations(x)?;
    let rb = k.row_bytes(cols)?;
    if w.len() != rows * rb {
        return Err(QuantError::ByteLength {
            ty,
            what: "weight matrix",
            expected: rows * rb,
            got: w.len(),
        });
    }
    k.matvec_rows(w, cols, &act, 0..rows, y)
}
