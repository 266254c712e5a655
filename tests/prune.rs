//! Pruning masks against an independent reference written here: sort all weights by
//! (|w|, position) in float64 and prune the first round(s·n) (Python rounding, as
//! torch.nn.utils.prune counts) — on the real digit CNN and on tie-heavy data that
//! crosses the parallel chunk boundaries.

mod common;

use common::fixture;
use slimscope::Model;
use slimscope::compress::prune::{
    Mask, Norm, count_to_prune, magnitude, magnitude_global, n_m, random, structured,
};

fn weights(name: &str) -> Vec<f32> {
    let model = Model::open(fixture("digit_cnn.pth")).unwrap_or_else(|e| panic!("{e}"));
    common::fixture_f32s("digit_cnn.pth", model.tensor_index(name).expect("tensor"))
}

/// Positions pruned by the reference: ascending (|w|, position), first k.
fn reference_pruned(w: &[f32], k: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| {
        f64::from(w[a].abs())
            .total_cmp(&f64::from(w[b].abs()))
            .then(a.cmp(&b))
    });
    let mut pruned = vec![false; w.len()];
    for &i in &order[..k] {
        pruned[i] = true;
    }
    pruned
}

fn pruned_of(m: &Mask) -> Vec<bool> {
    (0..m.len()).map(|i| !m.keeps(i)).collect()
}

/// Tie-heavy values: multiples of 0.1 in [-0.3, 0.3] (many zeros), over 3 chunks.
fn ties(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 % 7) as f32 - 3.0) * 0.1)
        .collect()
}

#[test]
fn magnitude_matches_the_sorted_reference_exactly() {
    let fc = weights("fc_layers.0.weight");
    let tied = ties(3 * 65536 + 77);
    // Small tensors take the sorting path, large ones the radix histograms.
    let conv = weights("conv_layers.0.weight");
    let small_ties = ties(1000);
    for (name, w) in [
        ("fc_layers.0.weight", &fc),
        ("ties", &tied),
        ("conv_layers.0.weight", &conv),
        ("small ties", &small_ties),
    ] {
        for s in [0.0, 0.3, 0.5, 0.9, 0.95, 1.0] {
            let m = magnitude(w, s).unwrap_or_else(|e| panic!("{e}"));
            let k = count_to_prune(w.len(), s).unwrap_or_default();
            assert_eq!(m.pruned(), k, "{name} at {s}: exact count");
            assert_eq!(pruned_of(&m), reference_pruned(w, k), "{name} at {s}");
        }
    }
}

#[test]
fn global_magnitude_uses_one_threshold_across_tensors() {
    let names = [
        "conv_layers.0.weight",
        "conv_layers.3.weight",
        "conv_layers.6.weight",
        "fc_layers.0.weight",
        "fc_layers.2.weight",
    ];
    let tensors: Vec<Vec<f32>> = names.iter().map(|n| weights(n)).collect();
    let all: Vec<f32> = tensors.concat();
    let slices: Vec<&[f32]> = tensors.iter().map(|t| t.as_slice()).collect();
    for s in [0.5, 0.9] {
        let masks = magnitude_global(&slices, s).unwrap_or_else(|e| panic!("{e}"));
        let k = count_to_prune(all.len(), s).unwrap_or_default();
        let ours: Vec<bool> = masks.iter().flat_map(pruned_of).collect();
        assert_eq!(ours, reference_pruned(&all, k), "global at {s}");
        // One threshold: the small first conv keeps a different share than the big fc.
        let shares: Vec<f64> = masks.iter().map(Mask::sparsity).collect();
        assert!(shares.iter().any(|&x| (x - s).abs() > 0.01), "{shares:?}");
    }
}

#[test]
fn applying_a_mask_zeroes_exactly_the_pruned_weights() {
    let mut w = weights("fc_layers.2.weight");
    let m = magnitude(&w, 0.8).unwrap_or_else(|e| panic!("{e}"));
    let before = w.clone();
    m.apply(&mut w);
    for (i, (a, b)) in w.iter().zip(&before).enumerate() {
        assert_eq!(*a, if m.keeps(i) { *b } else { 0.0 });
    }
    assert_eq!(w.iter().filter(|&&x| x == 0.0).count(), m.pruned());
}

#[test]
fn random_pruning_is_exact_and_reproducible() {
    let a = random(100_003, 0.37, 42).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        a.pruned(),
        count_to_prune(100_003, 0.37).unwrap_or_default()
    );
    assert_eq!(
        a,
        random(100_003, 0.37, 42).unwrap_or_else(|e| panic!("{e}"))
    );
    assert_ne!(
        a,
        random(100_003, 0.37, 43).unwrap_or_else(|e| panic!("{e}"))
    );
}

#[test]
fn two_four_keeps_the_two_largest_of_every_four_inputs() {
    let w = weights("fc_layers.0.weight"); // [256, 1152]
    let m = n_m(&w, 1152, 2, 4).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.sparsity(), 0.5);
    for g in 0..w.len() / 4 {
        let group = &w[g * 4..g * 4 + 4];
        let reference = reference_pruned(group, 2);
        let ours: Vec<bool> = (0..4).map(|j| !m.keeps(g * 4 + j)).collect();
        assert_eq!(ours, reference, "group {g}");
    }
    assert!(n_m(&w, 1152, 3, 2).is_err());
    assert!(n_m(&w, 1150, 2, 4).is_err());
}

#[test]
fn structured_pruning_removes_whole_neurons_and_filters() {
    // A 1024-neuron layer pruned 60% keeps 410 neurons (the example).
    let w: Vec<f32> = (0..1024 * 3)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01)
        .collect();
    let s = structured(&w, &[1024, 3], 0, 0.6, Norm::L2).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.shape, vec![410, 3]);
    // Reference: rank rows by float64 L2 norm, ties by index.
    let norm = |r: usize| {
        w[r * 3..r * 3 + 3]
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
    };
    let mut order: Vec<usize> = (0..1024).collect();
    order.sort_by(|&a, &b| norm(a).total_cmp(&norm(b)).then(a.cmp(&b)));
    let mut kept = order[614..].to_vec();
    kept.sort_unstable();
    assert_eq!(s.kept, kept);
    // Conv filters of the real CNN (axis 0) and its input channels (axis 1).
    let conv = weights("conv_layers.3.weight"); // [64, 32, 3, 3]
    let filters =
        structured(&conv, &[64, 32, 3, 3], 0, 0.25, Norm::L1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(filters.shape, vec![48, 32, 3, 3]);
    assert_eq!(filters.mask.pruned(), 16 * 32 * 9);
    let channels =
        structured(&conv, &[64, 32, 3, 3], 1, 0.5, Norm::L1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(channels.shape, vec![64, 16, 3, 3]);
    for c in 0..32 {
        let whole = (0..64).all(|o| {
            (0..9).all(|i| channels.mask.keeps((o * 32 + c) * 9 + i) == channels.kept.contains(&c))
        });
        assert!(whole, "channel {c} is kept or pruned as a whole");
    }
    assert!(
        structured(&conv, &[64, 32, 8], 0, 0.5, Norm::L1).is_err(),
        "shape must hold the values"
    );
}

/// Structured pruning is sized as the smaller dense matrix the kept rows make (what
/// a shrunk export stores), not as a bitmask over the full shape. Hand-derived for
/// the digit CNN's fc_layers.0.weight, 256 × 1152: 50 % removes 128 rows; f32 keeps
/// 128 · 1152 · 4 B; int8 per channel 128 · 1152 one-byte codes and 128 f16 scales.
#[test]
fn structured_pruning_is_sized_as_the_kept_rows() {
    use slimscope::compress::apply::apply_recipe;
    use slimscope::compress::recipe::Recipe;
    let model = Model::open(fixture("digit_cnn.pth")).expect("model");
    let size = |quant: &str| {
        let text = format!(
            "version = 1\n[[rule]]\nmatch = \"fc_layers.0.weight\"\n\
             prune = {{ method = \"structured\", sparsity = 0.5, axis = 0, norm = \"l2\" }}\n\
             quant = {quant}\n"
        );
        let recipe = Recipe::parse(&text, std::path::Path::new("r.toml")).expect("recipe");
        let applied = apply_recipe(&model, &recipe).expect("apply");
        let (_, t) = &applied[0];
        assert_eq!(t.shape_after.as_deref(), Some(&[128, 1152][..]));
        t.bytes_after
    };
    assert_eq!(size("{ format = \"none\" }"), 128 * 1152 * 4);
    assert_eq!(
        size("{ format = \"int\", bits = 8, granularity = \"channel\" }"),
        128 * 1152 + 128 * 2
    );
}
