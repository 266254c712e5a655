//! The first convolution of an image network over few input channels (a grayscale or
//! RGB image), computed directly with its ReLU and max-pool fused, the rest of the
//! network running on tract. As a matrix product such a convolution has an inner
//! dimension of 9–27, where an im2col-and-GEMM engine spends its time gathering
//! patches: on the digit CNN tract took 30% of the forward pass for 3% of its
//! multiply-adds. Here the kernel slides over rows the compiler vectorises, and a
//! pooled layer's full-size activations never leave the cache (the digit CNN's
//! samples/s: see `slimscope bench`).

use rayon::prelude::*;

use super::Runner;
use super::onnx::OnnxRunner;
use super::spec::{ArchSpec, DIRECT_CONV_MAX_TAPS, LayerSpec, window_output};
use super::weights::WeightSource;
use crate::error::Result;

/// A convolution (groups 1), then optionally ReLU, then optionally a max-pool: the
/// first layers of a spec, bound to weights.
pub struct FirstConv {
    cin: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    padding: usize,
    /// One sample: channels, height, width.
    input: [usize; 3],
    /// The convolution's output height and width.
    conv: [usize; 2],
    relu: bool,
    /// Max-pool kernel and stride.
    pool: Option<(usize, usize)>,
    /// `[cout, cin, kh, kw]`, row-major.
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// Spec layers covered (dropouts included).
    layers: usize,
    /// One sample's output: channels, height, width.
    output: Vec<usize>,
}

impl FirstConv {
    /// The direct path for the start of `spec`, if it begins with a convolution over
    /// few input channels; `None` otherwise. The spec must fit the weights (checked
    /// first by [`super::shapes::infer`], which names the layer of a mismatch).
    pub fn from_spec(spec: &ArchSpec, source: &dyn WeightSource) -> Result<Option<FirstConv>> {
        let Some(LayerSpec::Conv2d {
            weight,
            bias,
            stride,
            padding,
            groups: 1,
            ..
        }) = spec.layers.first()
        else {
            return Ok(None);
        };
        let &[c, h, w] = spec.input.as_slice() else {
            return Ok(None);
        };
        let (values, dims) = source.weight(weight)?;
        let &[cout, cin, kh, kw] = dims.as_slice() else {
            return Ok(None);
        };
        let (s, p) = (*stride, *padding);
        let (Some(oh), Some(ow)) = (window_output(h, kh, s, p), window_output(w, kw, s, p)) else {
            return Ok(None);
        };
        if cin != c || cin * kh * kw > DIRECT_CONV_MAX_TAPS {
            return Ok(None);
        }
        if values.len() != cout * cin * kh * kw {
            return Err(crate::error::Error::Internal(format!(
                "`{weight}`: {} values for shape {dims:?}",
                values.len()
            )));
        }
        let bias = match bias {
            Some(b) => source.weight(b)?.0,
            None => vec![0.0; cout],
        };
        if bias.len() != cout {
            return Ok(None);
        }
        let conv = [oh, ow];
        let mut layers = 1;
        let mut relu = false;
        let mut pool = None;
        for layer in &spec.layers[1..] {
            match layer {
                LayerSpec::Dropout => {}
                LayerSpec::Relu if !relu && pool.is_none() => relu = true,
                &LayerSpec::Maxpool { kernel, stride }
                    if pool.is_none() && kernel > 0 && kernel <= conv[0].min(conv[1]) =>
                {
                    pool = Some((kernel, stride.unwrap_or(kernel).max(1)));
                }
                _ => break,
            }
            layers += 1;
        }
        let output = match pool {
            Some((k, ps)) => vec![cout, (conv[0] - k) / ps + 1, (conv[1] - k) / ps + 1],
            None => vec![cout, conv[0], conv[1]],
        };
        Ok(Some(FirstConv {
            cin,
            cout,
            kh,
            kw,
            stride: s,
            padding: p,
            input: [c, h, w],
            conv,
            relu,
            pool,
            weight: values,
            bias,
            layers,
            output,
        }))
    }

    /// How many spec layers this covers: the rest of the network starts there.
    pub fn layers(&self) -> usize {
        self.layers
    }

    pub fn output_shape(&self) -> &[usize] {
        &self.output
    }

    /// Row lengths of the scratch planes: the output width rounded up to whole
    /// vectors of eight (the extra columns are computed and ignored), and the padded
    /// input's width, wide enough for them.
    fn widths(&self) -> (usize, usize) {
        let ow8 = self.conv[1].div_ceil(8) * 8;
        let wp = self.input[2] + 2 * self.padding;
        let wpp = if self.stride == 1 {
            wp.max(self.kw - 1 + ow8)
        } else {
            wp
        };
        (ow8, wpp)
    }

    /// The outputs for `n` samples laid out row-major in `x`.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        self.forward_on(x, n, true)
    }

    /// [`Self::forward`], with AVX2 where the CPU has it if `simd`.
    fn forward_on(&self, x: &[f32], n: usize, simd: bool) -> Vec<f32> {
        let [c, h, w] = self.input;
        let hp = h + 2 * self.padding;
        let (ow8, wpp) = self.widths();
        let in_len = c * h * w;
        let out_len: usize = self.output.iter().product();
        let mut out = vec![0f32; n * out_len];
        out.par_chunks_mut(out_len)
            .zip(x[..n * in_len].par_chunks(in_len))
            .with_min_len(4)
            .for_each_init(
                || Scratch {
                    padded: vec![0f32; c * hp * wpp],
                    plane: vec![0f32; self.conv[0] * ow8],
                    column: vec![0f32; ow8],
                },
                |scratch, (o, xi)| {
                    for ci in 0..c {
                        for y in 0..h {
                            let at = (ci * hp + y + self.padding) * wpp + self.padding;
                            scratch.padded[at..at + w]
                                .copy_from_slice(&xi[(ci * h + y) * w..][..w]);
                        }
                    }
                    #[cfg(target_arch = "x86_64")]
                    if simd && std::is_x86_feature_detected!("avx2") {
                        // SAFETY: the CPU has AVX2 (checked just above).
                        unsafe { self.sample_avx2(scratch, o) };
                        return;
                    }
                    self.sample(scratch, o, add_scaled);
                },
            );
        out
    }

    /// [`Self::sample`] compiled for AVX2: the same operations in the same order, on
    /// eight lanes at a time.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn sample_avx2(&self, scratch: &mut Scratch, out: &mut [f32]) {
        self.sample(scratch, out, |acc, x, w| {
            use std::arch::x86_64::*;
            let wv = _mm256_set1_ps(w);
            for (a, b) in acc
                .as_chunks_mut::<8>()
                .0
                .iter_mut()
                .zip(x.as_chunks::<8>().0)
            {
                // SAFETY: `a` and `b` are 8 floats each; loadu/storeu need no alignment.
                unsafe {
                    let sum = _mm256_add_ps(
                        _mm256_loadu_ps(a.as_ptr()),
                        _mm256_mul_ps(wv, _mm256_loadu_ps(b.as_ptr())),
                    );
                    _mm256_storeu_ps(a.as_mut_ptr(), sum);
                }
            }
        });
    }

    /// One sample, its zero-padded input in `scratch.padded`, into `out`; `add` is
    /// [`add_scaled`] or a vector version of it.
    #[inline(always)]
    fn sample(
        &self,
        scratch: &mut Scratch,
        out: &mut [f32],
        add: impl Fn(&mut [f32], &[f32], f32),
    ) {
        let hp = self.input[1] + 2 * self.padding;
        let (ow8, wpp) = self.widths();
        let ow = self.conv[1];
        let s = self.stride;
        let per_channel = out.len() / self.cout;
        let taps = self.cin * self.kh * self.kw;
        let Scratch {
            padded,
            plane,
            column,
        } = scratch;
        for co in 0..self.cout {
            let weights = &self.weight[co * taps..(co + 1) * taps];
            for (oy, acc) in plane.chunks_exact_mut(ow8).enumerate() {
                acc.fill(self.bias[co]);
                let mut w = weights.iter();
                for ci in 0..self.cin {
                    for dy in 0..self.kh {
                        let row = &padded[(ci * hp + oy * s + dy) * wpp..][..wpp];
                        for dx in 0..self.kw {
                            let wv = *w.next().unwrap_or(&0.0);
                            if s == 1 {
                                add(acc, &row[dx..dx + ow8], wv);
                            } else {
                                for (ox, d) in acc[..ow].iter_mut().enumerate() {
                                    *d += wv * row[dx + ox * s];
                                }
                            }
                        }
                    }
                }
            }
            let o = &mut out[co * per_channel..(co + 1) * per_channel];
            // ReLU after max-pool equals max-pool after ReLU, on fewer values.
            let relu = |v: f32| if self.relu && v < 0.0 { 0.0 } else { v };
            match self.pool {
                Some((k, ps)) => {
                    let pw = (ow - k) / ps + 1;
                    for (py, orow) in o.chunks_exact_mut(pw).enumerate() {
                        // The window's rows maxed element-wise, then across each window.
                        let top = py * ps * ow8;
                        column.copy_from_slice(&plane[top..top + ow8]);
                        for y in 1..k {
                            let next = &plane[top + y * ow8..][..ow8];
                            for (c, &p) in column.iter_mut().zip(next) {
                                *c = if p > *c { p } else { *c };
                            }
                        }
                        for (px, v) in orow.iter_mut().enumerate() {
                            let window = &column[px * ps..px * ps + k];
                            *v = relu(
                                window
                                    .iter()
                                    .fold(f32::NEG_INFINITY, |m, &p| if p > m { p } else { m }),
                            );
                        }
                    }
                }
                None => {
                    for (orow, prow) in o.chunks_exact_mut(ow).zip(plane.chunks_exact(ow8)) {
                        for (v, &p) in orow.iter_mut().zip(prow) {
                            *v = relu(p);
                        }
                    }
                }
            }
        }
    }
}

/// A worker's buffers: the padded input, one output channel before pooling, and one
/// row of it maxed over a pooling window's height.
struct Scratch {
    padded: Vec<f32>,
    plane: Vec<f32>,
    column: Vec<f32>,
}

/// `acc += w·x` over whole chunks of eight (both lengths are multiples of eight), so
/// the compiler uses whole vector registers and no masked remainder.
#[inline(always)]
fn add_scaled(acc: &mut [f32], x: &[f32], w: f32) {
    let (acc, _) = acc.as_chunks_mut::<8>();
    let (x, _) = x.as_chunks::<8>();
    for (a, b) in acc.iter_mut().zip(x) {
        for i in 0..8 {
            a[i] += w * b[i];
        }
    }
}

/// The first convolution computed directly, the rest of the network on tract.
pub struct FirstConvRunner {
    pub head: FirstConv,
    pub rest: OnnxRunner,
    pub input: Vec<usize>,
}

impl Runner for FirstConvRunner {
    fn input_shape(&self) -> &[usize] {
        &self.input
    }

    fn classes(&self) -> usize {
        self.rest.classes()
    }

    fn logits(&self, batch: &[f32], n: usize) -> Result<Vec<f32>> {
        self.rest.logits(&self.head.forward(batch, n), n)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::net::onnx::OnnxGraph;

    /// The direct path against tract running the same layers, over strides, paddings,
    /// kernels, channel counts, pools, ReLU and dropout.
    #[test]
    fn the_direct_path_computes_what_tract_computes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cases = [
            // (cin, cout, k, stride, padding, h, w, tail)
            (1, 32, 3, 1, 1, 28, 28, "relu,pool2"),
            (1, 6, 5, 1, 2, 28, 28, "relu,pool2"),
            (3, 8, 3, 2, 1, 17, 15, "relu"),
            (3, 4, 3, 1, 0, 9, 12, "dropout,pool3s2"),
            (2, 5, 2, 3, 2, 11, 10, ""),
        ];
        for (cin, cout, k, stride, padding, h, w, tail) in cases {
            let mut weights: HashMap<String, (Vec<f32>, Vec<usize>)> = HashMap::new();
            let mut random =
                |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
            weights.insert(
                "w".into(),
                (random(cout * cin * k * k), vec![cout, cin, k, k]),
            );
            weights.insert("b".into(), (random(cout), vec![cout]));
            let mut layers = vec![LayerSpec::Conv2d {
                weight: "w".into(),
                bias: Some("b".into()),
                stride,
                padding,
                groups: 1,
                out: None,
                kernel: None,
            }];
            for t in tail.split(',').filter(|t| !t.is_empty()) {
                layers.push(match t {
                    "relu" => LayerSpec::Relu,
                    "dropout" => LayerSpec::Dropout,
                    "pool2" => LayerSpec::Maxpool {
                        kernel: 2,
                        stride: None,
                    },
                    _ => LayerSpec::Maxpool {
                        kernel: 3,
                        stride: Some(2),
                    },
                });
            }
            let spec = ArchSpec {
                version: 1,
                input: vec![cin, h, w],
                layers,
            };
            let head = FirstConv::from_spec(&spec, &weights)
                .expect("weights")
                .expect("the direct path applies");
            assert_eq!(head.layers(), spec.layers.len());
            let mut flat = spec.clone();
            flat.layers.push(LayerSpec::Flatten);
            let tract = OnnxGraph::from_spec(&flat, &weights, Path::new("(test)"))
                .and_then(|g| g.runner(&[]))
                .expect("tract");
            let n = 5;
            let x = random(n * cin * h * w);
            let want = tract.logits(&x, n).expect("tract forward");
            let got = head.forward(&x, n);
            assert_eq!(got.len(), want.len(), "{spec:?}");
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                    "{spec:?}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn wide_or_grouped_first_layers_stay_on_tract() {
        let mut weights: HashMap<String, (Vec<f32>, Vec<usize>)> = HashMap::new();
        weights.insert("w".into(), (vec![0.0; 8 * 4 * 9], vec![8, 4, 3, 3]));
        let conv = |groups| ArchSpec {
            version: 1,
            input: vec![4, 8, 8],
            layers: vec![LayerSpec::Conv2d {
                weight: "w".into(),
                bias: None,
                stride: 1,
                padding: 1,
                groups,
                out: None,
                kernel: None,
            }],
        };
        // 4 channels × 3 × 3 = 36 taps: an ordinary GEMM, tract's job.
        assert!(
            FirstConv::from_spec(&conv(1), &weights)
                .expect("w")
                .is_none()
        );
        assert!(
            FirstConv::from_spec(&conv(2), &weights)
                .expect("w")
                .is_none()
        );
    }
}
