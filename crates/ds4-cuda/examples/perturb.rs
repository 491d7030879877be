//! How much does one layer's output move when its input moves by one part in 10^7?
//! (CPU only.) Measures the reference's own sensitivity, the floor under any
//! GPU-vs-CPU comparison of a quantized model.
use ds4_engine::layer::{LayerCtx, LayerTrace, layer_forward};
use ds4_engine::{ForwardOptions, Model};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let model = Model::from_gguf(std::path::Path::new(&args[1])).unwrap();
    let n: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(200);
    let no_sim = args.iter().any(|a| a == "--no-qat-sim");
    let opts = ForwardOptions { no_qat_sim: no_sim };
    let cfg = &model.cfg;
    let mut s = 7u64;
    let toks: Vec<u32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) % 128000) as u32
        })
        .collect();
    // inputs to layer 0: embedding x hc
    let xs: Vec<Vec<f32>> = toks
        .iter()
        .map(|&t| {
            let e = model.weights.token_embd.row_f32(t as usize).unwrap();
            (0..cfg.hc).flat_map(|_| e.iter().copied()).collect()
        })
        .collect();
    for l in 0..cfg.n_layer.min(2) {
        let run = |scale: f32| {
            let mut cache = model.new_cache_for(n + 1);
            let ctx = LayerCtx {
                cfg,
                layer: l,
                rope: model.rope_for(l),
                opts,
            };
            let mut lts = vec![LayerTrace::default(); n];
            let x: Vec<Vec<f32>> = xs
                .iter()
                .map(|v| v.iter().map(|a| a * scale).collect())
                .collect();
            layer_forward(
                &ctx,
                &model.weights.layers[l],
                &mut cache.layers[l],
                x,
                &toks,
                0,
                &mut lts,
            )
            .unwrap()
        };
        let a = run(1.0);
        let b = run(1.0 + 1.2e-7);
        let mut over = 0;
        let mut worst = 0f32;
        for (x, y) in a.iter().zip(&b) {
            let sc = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / sc;
            worst = worst.max(d);
            over += (d > 1e-3) as usize;
        }
        println!(
            "layer {l}: input x(1+1.2e-7): max rel change {worst:.3e}, positions > 1e-3: {over}/{n}"
        );
    }
}
