//! Calibration statistics of a graph's weighted layers (see
//! `compress::calibration`): the graph runs on the calibration samples with each
//! weighted layer's input as an extra output, and every micro-batch is folded into
//! the layer's `Σ x xᵀ` (or its diagonal): a Gemm's or MatMul's input rows as they
//! are, a convolution's unfolded patches (im2col, as `torch.nn.Unfold` lays them
//! out: channel, then kernel row, then kernel column, the weight's own order), one
//! row per output position, padding counted as zeros.

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::pb::{AttributeProto, GraphProto, NodeProto};

use super::onnx::OnnxGraph;
use crate::compress::calibration::{LayerStatistics, Need, Statistics, WeightLayout};
use crate::error::{Error, Result};

/// The most memory the statistics of one collection may hold.
const STATISTICS_BUDGET: u64 = 4 << 30;

/// A weighted layer: which input it reads and how its weight multiplies it.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedLayer {
    pub weight: String,
    pub input: String,
    pub kind: LayerKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LayerKind {
    /// `x · Wᵀ` (`OutIn`) or `x · W` (`InOut`) over the input's last dimension.
    Linear { layout: WeightLayout },
    /// A 2-D convolution, weight `[out, C/group, kh, kw]`.
    Conv(ConvGeometry),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConvGeometry {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Begin and end padding per spatial axis, or `None` for auto padding
    /// (`SAME_UPPER` / `SAME_LOWER` with `upper` telling which), computed from the
    /// input's size.
    pub pads: Option<[usize; 4]>,
    pub same_upper: bool,
    pub group: usize,
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn pair(node: &NodeProto, name: &str, default: usize) -> Option<[usize; 2]> {
    match attr(node, name).map(|a| a.ints.as_slice()) {
        None | Some([]) => Some([default, default]),
        Some(&[a, b]) if a >= 0 && b >= 0 => Some([a as usize, b as usize]),
        _ => None,
    }
}

/// The shapes of the tensors `graph` stores: its initializers and the outputs of
/// its `Constant` nodes (where exporters such as Paddle's keep every weight).
fn stored_dims(graph: &GraphProto) -> HashMap<&str, &[i64]> {
    let mut dims: HashMap<&str, &[i64]> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.as_slice()))
        .collect();
    for node in graph.node.iter().filter(|n| n.op_type == "Constant") {
        if let (Some(out), Some(t)) = (
            node.output.first(),
            attr(node, "value").and_then(|a| a.t.as_ref()),
        ) {
            dims.insert(out.as_str(), t.dims.as_slice());
        }
    }
    dims
}

/// The weighted layers of `graph` slimscope can collect statistics for, by weight:
/// Gemm (`transA = 0`), MatMul with a stored 2-D right-hand side, 2-D Conv. Their
/// weights' shapes come from the stored tensors.
pub fn weighted_layers(graph: &GraphProto) -> Vec<WeightedLayer> {
    let dims = stored_dims(graph);
    let mut out = Vec::new();
    for node in &graph.node {
        let (Some(x), Some(w)) = (node.input.first(), node.input.get(1)) else {
            continue;
        };
        let (Some(shape), false) = (dims.get(w.as_str()), dims.contains_key(x.as_str())) else {
            continue;
        };
        // An empty weight has nothing to learn (and no input columns to count).
        if shape.iter().any(|&d| d <= 0) {
            continue;
        }
        let kind = match node.op_type.as_str() {
            "Gemm" if attr(node, "transA").is_none_or(|a| a.i == 0) && shape.len() == 2 => {
                LayerKind::Linear {
                    layout: if attr(node, "transB").is_some_and(|a| a.i != 0) {
                        WeightLayout::OutIn
                    } else {
                        WeightLayout::InOut
                    },
                }
            }
            "MatMul" if shape.len() == 2 => LayerKind::Linear {
                layout: WeightLayout::InOut,
            },
            "Conv" if shape.len() == 4 => {
                let auto = attr(node, "auto_pad")
                    .map(|a| String::from_utf8_lossy(&a.s).into_owned())
                    .unwrap_or_default();
                let pads = match attr(node, "pads").map(|a| a.ints.as_slice()) {
                    None | Some([]) => Some([0; 4]),
                    Some(&[a, b, c, d]) if [a, b, c, d].iter().all(|&p| p >= 0) => {
                        Some([a as usize, b as usize, c as usize, d as usize])
                    }
                    _ => continue,
                };
                let (pads, same_upper) = match auto.as_str() {
                    "" | "NOTSET" => (pads, false),
                    "VALID" => (Some([0; 4]), false),
                    "SAME_UPPER" => (None, true),
                    "SAME_LOWER" => (None, false),
                    _ => continue,
                };
                let (Some(strides), Some(dilations)) =
                    (pair(node, "strides", 1), pair(node, "dilations", 1))
                else {
                    continue;
                };
                let group = attr(node, "group").map_or(1, |a| a.i.max(1) as usize);
                let (o, kh, kw) = (shape[0] as usize, shape[2] as usize, shape[3] as usize);
                let degenerate =
                    [kh, kw, strides[0], strides[1], dilations[0], dilations[1]].contains(&0);
                if o == 0 || degenerate || !o.is_multiple_of(group) {
                    continue;
                }
                LayerKind::Conv(ConvGeometry {
                    kernel: [kh, kw],
                    strides,
                    dilations,
                    pads,
                    same_upper,
                    group,
                })
            }
            _ => continue,
        };
        out.push(WeightedLayer {
            weight: w.clone(),
            input: x.clone(),
            kind,
        });
    }
    // A weight used by two layers has no one input to learn from.
    let mut uses: HashMap<String, usize> = HashMap::new();
    for l in &out {
        *uses.entry(l.weight.clone()).or_default() += 1;
    }
    out.retain(|l| uses[&l.weight] == 1);
    out
}

impl ConvGeometry {
    /// Begin and end padding of both spatial axes for an input of `size`.
    fn pads_for(&self, size: [usize; 2]) -> [usize; 4] {
        if let Some(p) = self.pads {
            return p;
        }
        let mut p = [0; 4];
        for a in 0..2 {
            let out = size[a].div_ceil(self.strides[a]);
            let reach = (self.kernel[a] - 1) * self.dilations[a] + 1;
            let total = ((out.max(1) - 1) * self.strides[a] + reach).saturating_sub(size[a]);
            let (small, large) = (total / 2, total - total / 2);
            (p[a], p[a + 2]) = if self.same_upper {
                (small, large)
            } else {
                (large, small)
            };
        }
        p
    }

    /// The unfolded rows of one sample `x` (`C × H × W`) for group `g`: one row of
    /// `C/group × kh × kw` values per output position.
    fn unfold(&self, x: &[f32], c: usize, size: [usize; 2], g: usize, rows: &mut Vec<f64>) {
        let [h, w] = size;
        let [kh, kw] = self.kernel;
        let [sh, sw] = self.strides;
        let [dh, dw] = self.dilations;
        let p = self.pads_for(size);
        let cg = c / self.group;
        rows.clear();
        if h + p[0] + p[2] < (kh - 1) * dh + 1 || w + p[1] + p[3] < (kw - 1) * dw + 1 {
            return;
        }
        let span = |n: usize, pb: usize, pe: usize, k: usize, d: usize, s: usize| {
            (n + pb + pe).saturating_sub((k - 1) * d + 1) / s + 1
        };
        let (oh, ow) = (
            span(h, p[0], p[2], kh, dh, sh),
            span(w, p[1], p[3], kw, dw, sw),
        );
        rows.reserve(oh * ow * cg * kh * kw);
        for y in 0..oh {
            for xo in 0..ow {
                for ci in g * cg..(g + 1) * cg {
                    let plane = &x[ci * h * w..(ci + 1) * h * w];
                    for ky in 0..kh {
                        let iy = (y * sh + ky * dh) as isize - p[0] as isize;
                        for kx in 0..kw {
                            let ix = (xo * sw + kx * dw) as isize - p[1] as isize;
                            let inside =
                                (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix);
                            rows.push(if inside {
                                f64::from(plane[iy as usize * w + ix as usize])
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
    }
}

/// The statistics `need` asks for of every weighted layer of `graph` whose weight is
/// in `weights`, over the calibration samples `xs` (with the graph's own weights:
/// one-shot). `data_key` identifies the samples and the network they ran through. `progress(done, total)` returns
/// false to cancel.
pub fn collect(
    graph: &OnnxGraph,
    xs: &[f32],
    weights: &[String],
    need: Need,
    data_key: u64,
    progress: impl FnMut(usize, usize) -> bool,
) -> Result<Statistics> {
    let layers: Vec<WeightedLayer> = graph
        .proto()
        .graph
        .as_ref()
        .map(weighted_layers)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| weights.contains(&l.weight))
        .collect();
    let dims: HashMap<&str, Vec<usize>> = graph
        .proto()
        .graph
        .as_ref()
        .map(stored_dims)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, d)| (name, d.iter().map(|&d| d.max(0) as usize).collect()))
        .collect();
    // Bounded memory: the sums are held for every layer at once.
    let bytes: u64 = layers
        .iter()
        .map(|l| {
            let w = &dims[l.weight.as_str()];
            let (d, groups) = match &l.kind {
                LayerKind::Linear {
                    layout: WeightLayout::OutIn,
                } => (w[1], 1),
                LayerKind::Linear { .. } => (w[0], 1),
                LayerKind::Conv(g) => (w[1] * w[2] * w[3], g.group),
            };
            let per = match need {
                Need::Diagonal => d,
                Need::Gram => d.saturating_mul(d),
            };
            (per.saturating_mul(groups) as u64).saturating_mul(8)
        })
        .fold(0u64, u64::saturating_add);
    if bytes > STATISTICS_BUDGET {
        return Err(Error::InvalidSetting(format!(
            "calibration statistics of the {} layers the recipe's data-aware rules touch would \
             hold {} in memory (Σ x xᵀ of each layer's inputs, float64, at most {}): restrict \
             those rules to fewer layers",
            layers.len(),
            crate::units::human_bytes(bytes),
            crate::units::human_bytes(STATISTICS_BUDGET)
        )));
    }
    let mut inputs: Vec<String> = Vec::new();
    for l in &layers {
        if !inputs.contains(&l.input) {
            inputs.push(l.input.clone());
        }
    }
    let mut stats: Vec<Option<LayerStatistics>> = vec![None; layers.len()];
    let mut rows = Vec::new();
    graph.capture(xs, &inputs, progress, |k, shape, values| {
        let name = &inputs[k];
        for (l, slot) in layers.iter().zip(stats.iter_mut()) {
            if l.input != *name {
                continue;
            }
            let w = &dims[l.weight.as_str()];
            let bad =
                |what: String| Error::Internal(format!("calibration of `{}`: {what}", l.weight));
            match &l.kind {
                LayerKind::Linear { layout } => {
                    let d = match layout {
                        WeightLayout::OutIn => w[1],
                        WeightLayout::InOut => w[0],
                    };
                    if shape.last() != Some(&d) {
                        return Err(bad(format!("input {shape:?} does not end in {d}")));
                    }
                    let s = slot.get_or_insert_with(|| LayerStatistics::new(d, 1, *layout, need));
                    let x: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
                    s.add_rows(0, &x, values.len() / d);
                }
                LayerKind::Conv(geometry) => {
                    let &[n, c, h, wd] = shape else {
                        return Err(bad(format!("input {shape:?} is not N × C × H × W")));
                    };
                    let d = w[1] * w[2] * w[3];
                    if c != w[1] * geometry.group {
                        return Err(bad(format!("{c} input channels for weight {w:?}")));
                    }
                    let s = slot.get_or_insert_with(|| {
                        LayerStatistics::new(d, geometry.group, WeightLayout::OutIn, need)
                    });
                    if c * h * wd == 0 {
                        continue;
                    }
                    for sample in values.chunks_exact(c * h * wd).take(n) {
                        for g in 0..geometry.group {
                            geometry.unfold(sample, c, [h, wd], g, &mut rows);
                            s.add_rows(g, &rows, rows.len() / d.max(1));
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    let samples = xs.len() / graph.input_shape().iter().product::<usize>().max(1);
    Ok(Statistics {
        layers: layers
            .into_iter()
            .zip(stats)
            .filter_map(|(l, s)| Some((l.weight, Arc::new(s?))))
            .collect(),
        samples,
        data_key,
        data_sha256: String::new(),
    })
}
