//! A session allocates the compressed rows of its whole context when it is
//! created: filling the context never moves or grows them.

use std::path::PathBuf;

use ds4_engine::{ForwardOptions, Model, Session};

#[test]
fn compressed_rows_are_reserved_for_the_whole_context() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-v4");
    let model = Model::from_official_dir(&dir).unwrap();
    let ctx = 150;
    let mut s = Session::new(&model, ctx, ForwardOptions::default());
    let before: Vec<(usize, usize, *const f32, *const f32)> = s
        .cache()
        .layers
        .iter()
        .map(|l| {
            (
                l.comp.capacity(),
                l.icomp.capacity(),
                l.comp.as_flat().as_ptr(),
                l.icomp.as_flat().as_ptr(),
            )
        })
        .collect();
    for (l, &(comp_cap, icomp_cap, _, _)) in before.iter().enumerate() {
        let ratio = model.cfg.compress_ratios[l];
        let want = ctx.checked_div(ratio).map_or(0, |n| n + 2);
        assert!(comp_cap >= want, "layer {l}: {comp_cap} < {want}");
        if ratio == 4 {
            assert!(icomp_cap >= want, "layer {l} indexer: {icomp_cap} < {want}");
        }
    }
    let tokens: Vec<u32> = (0..ctx as u32)
        .map(|i| (i * 37) % model.cfg.n_vocab as u32)
        .collect();
    s.sync(&tokens[..ctx - 1]).unwrap();
    s.decode(tokens[ctx - 1]).unwrap();
    for (l, (layer, &(comp_cap, icomp_cap, comp_ptr, icomp_ptr))) in
        s.cache().layers.iter().zip(&before).enumerate()
    {
        assert!(model.cfg.compress_ratios[l] == 0 || !layer.comp.is_empty());
        assert_eq!(layer.comp.capacity(), comp_cap, "layer {l} grew");
        assert_eq!(layer.icomp.capacity(), icomp_cap, "layer {l} indexer grew");
        if comp_cap > 0 {
            assert_eq!(layer.comp.as_flat().as_ptr(), comp_ptr, "layer {l} moved");
        }
        if icomp_cap > 0 {
            assert_eq!(
                layer.icomp.as_flat().as_ptr(),
                icomp_ptr,
                "layer {l} indexer moved"
            );
        }
    }
}
