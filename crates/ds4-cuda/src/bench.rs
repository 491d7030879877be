//! One layer's decode products timed in isolation (for `cuda_profile`): each product
//! launched back to back between two events, as a decode step launches it (one token,
//! activations already quantized), against the weight bytes it reads. What the
//! per-launch profiler cannot give: the time without an event around every launch.
//! A fused pair (`[A; B]`) is timed as the one product it is; of a pair left as two
//! products, the first.

use cudarc::driver::sys;
use ds4_gguf::GgmlType;

use crate::forward::{Mv, mv_launch};
use crate::weights::{DevMat, DevPair};
use crate::{CudaBackend, CudaError};

/// A product's mean time per launch over a run of identical launches.
#[derive(Debug, Clone)]
pub struct ProductTime {
    pub name: &'static str,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    /// Weight bytes one launch reads (the selected experts' for routed products).
    pub bytes: usize,
    pub us: f64,
}

fn read_bytes(m: &DevMat, mats: usize) -> usize {
    mats * (m.mat_bytes + m.split.map_or(0, |s| s.scale_mat_bytes))
}

impl CudaBackend {
    /// Times the decode products of layer `layer`, `reps` launches each.
    pub fn time_decode_products<'a>(
        &'a self,
        layer: usize,
        reps: usize,
    ) -> Result<Vec<ProductTime>, CudaError> {
        let g = &self.gpu;
        let cfg = &self.cfg;
        let w = &self.weights.layers[layer];
        let k = cfg.n_expert_used;
        // (name, matrix, routed, column group)
        let first = |p: &'a DevPair| p.mats()[0];
        let mut list: Vec<(&'static str, &DevMat, bool, (usize, usize))> = vec![
            ("q_a+kv", first(&w.q_a_kv), false, (0, 0)),
            ("q_b", &w.q_b, false, (0, 0)),
            ("out_a", &w.out_a, false, (cfg.o_lora, cfg.o_group_in())),
            ("out_b", &w.out_b, false, (0, 0)),
            ("hc_attn.fn", &w.hc_attn.fn_, false, (0, 0)),
            ("router", &w.router, false, (0, 0)),
            ("gate+up_exps", first(&w.gate_up_exps), true, (0, 0)),
            ("down_exps", &w.down_exps, true, (0, 0)),
            ("gate+up_sh", first(&w.gate_up_sh), false, (0, 0)),
            ("down_sh", &w.down_sh, false, (0, 0)),
        ];
        if let Some(c) = &w.compressor {
            list.push(("compressor", first(&c.kv_gate), false, (0, 0)));
        }
        if let Some(i) = &w.indexer {
            list.push(("indexer.q_b", &i.q_b, false, (0, 0)));
            list.push(("indexer.proj", &i.proj, false, (0, 0)));
        }
        // A grouped product reads one slice of `grp.1` per group of `grp.0` rows.
        let x_len = |m: &DevMat, grp: (usize, usize)| {
            m.rows
                .checked_div(grp.0)
                .map_or(m.cols, |groups| groups * grp.1)
        };
        let xmax = list
            .iter()
            .map(|(_, m, _, gr)| x_len(m, *gr))
            .max()
            .unwrap_or(1)
            * k;
        let ymax = list.iter().map(|(_, m, _, _)| m.rows).max().unwrap_or(1) * k;
        // Activations of moderate size and both signs (the products' speed does not
        // depend on them; the quantizers must see no zero blocks).
        let xs: Vec<f32> = (0..xmax)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let x = g.upload(&xs)?;
        let (q, d, s) = (
            g.alloc(xmax)?,
            g.alloc(xmax / 32 * 4 + 4)?,
            g.alloc(xmax / 16 * 2 + 2)?,
        );
        let y = g.alloc(ymax * 4)?;
        let ids = g.upload(&(0..k as i32).collect::<Vec<i32>>())?;
        let mut out = Vec::new();
        for (name, m, routed, grp) in list {
            let xl = x_len(m, grp);
            let c = if routed {
                // gate: one token's input shared by its k items; down: one input each.
                let per_item = name.starts_with("down");
                Mv {
                    x: x.ptr,
                    n_act: if per_item { k } else { 1 },
                    x_len: xl,
                    nb: k,
                    act_div: if per_item { 1 } else { k },
                    ids: ids.ptr,
                    group: (0, 0),
                    y: y.ptr,
                    y_stride: m.rows,
                    by_expert: None,
                    act_ready: false,
                    part: (0, 0),
                    half: (0, 0),
                    half_ready: false,
                    x_scale: 0,
                }
            } else {
                Mv {
                    group: grp,
                    ..Mv::plain(x.ptr, 1, xl, y.ptr, m.rows)
                }
            };
            mv_launch(g, m, [&q, &d, &s], c)?;
            let c = Mv {
                act_ready: true,
                ..c
            };
            let ev = |what| {
                g.stream
                    .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(|e| CudaError::Driver(format!("{what}: {e}")))
            };
            let a = ev("event")?;
            for _ in 0..reps {
                mv_launch(g, m, [&q, &d, &s], c)?;
            }
            let b = ev("event")?;
            g.sync()?;
            let ms = a
                .elapsed_ms(&b)
                .map_err(|e| CudaError::Driver(format!("elapsed: {e}")))?;
            out.push(ProductTime {
                name,
                ty: m.ty,
                rows: m.rows,
                cols: m.cols,
                bytes: read_bytes(m, if routed { k } else { 1 }),
                us: ms as f64 * 1000.0 / reps as f64,
            });
        }
        Ok(out)
    }
}
