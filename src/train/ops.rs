//! Training ops with one-pass gradients. candle builds the gradients of `relu` and
//! `max_pool2d` from five to eight whole-tensor passes each (masks, casts,
//! upsampling), and its max-pool gradient is scaled by 1/k² (it multiplies by the
//! window's mean of the max mask instead of dividing by the count); these compute the
//! PyTorch gradient in one pass. ReLU followed by a max-pool (the usual block) is one
//! op: max(0, window max). [`unfold`] is im2col with a one-pass col2im gradient, for
//! convolutions as matrix products (see `net::conv2d`).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: f32 only");
    };
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: needs a contiguous input");
    };
    Ok(&v[start..end])
}

/// ReLU with a one-pass gradient.
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "relu-1pass"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let y = x.par_iter().map(|&v| v.max(0.0)).collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &ReluGrad)?))
    }
}

/// grad · [x > 0].
struct ReluGrad;

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-1pass-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
        );
        let out = x
            .par_iter()
            .zip(g)
            .map(|(&x, &g)| if x > 0.0 { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Max-pool over non-overlapping k×k windows of [N, C, H, W] (rows and columns past
/// the last whole window dropped, as PyTorch does), optionally of ReLU's output.
#[derive(Clone, Copy)]
struct Pool {
    k: usize,
    relu: bool,
}

impl Pool {
    fn dims(l: &Layout) -> candle_core::Result<(usize, usize, usize, usize)> {
        l.shape().dims4()
    }

    /// The position of each window's maximum within `plane` (first one on ties, as
    /// PyTorch picks), calling `f(output index, input index)`.
    fn argmax(&self, plane: &[f32], h: usize, w: usize, mut f: impl FnMut(usize, usize)) {
        let (oh, ow) = (h / self.k, w / self.k);
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = (oy * self.k) * w + ox * self.k;
                for dy in 0..self.k {
                    let row = (oy * self.k + dy) * w + ox * self.k;
                    for i in row..row + self.k {
                        if plane[i] > plane[best] {
                            best = i;
                        }
                    }
                }
                f(oy * ow + ox, best);
            }
        }
    }
}

impl CustomOp1 for Pool {
    fn name(&self) -> &'static str {
        "maxpool-1pass"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let (n, c, h, w) = Self::dims(l)?;
        let (oh, ow) = (h / self.k, w / self.k);
        let mut y = vec![0f32; n * c * oh * ow];
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(out, plane)| {
                self.argmax(plane, h, w, |o, i| {
                    out[o] = if self.relu {
                        plane[i].max(0.0)
                    } else {
                        plane[i]
                    };
                });
            });
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &PoolGrad(*self))?,
        ))
    }
}

/// The gradient reaches each window's maximum (if ReLU passed it).
struct PoolGrad(Pool);

impl CustomOp2 for PoolGrad {
    fn name(&self) -> &'static str {
        "maxpool-1pass-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, g) = (
            contiguous(s1, l1, self.name())?,
            contiguous(s2, l2, self.name())?,
        );
        let (n, c, h, w) = Pool::dims(l1)?;
        let (oh, ow) = (h / self.0.k, w / self.0.k);
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(g.par_chunks(oh * ow)))
            .for_each(|(d, (plane, g))| {
                self.0.argmax(plane, h, w, |o, i| {
                    if !self.0.relu || plane[i] > 0.0 {
                        d[i] = g[o];
                    }
                });
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// im2col for a stride-1 convolution: [N, C, H, W] → [C·kh·kw, N·oh·ow], each row
/// one kernel tap (c, i, j) over every output position, zeros where the tap falls in
/// the padding. Its gradient (col2im) adds each row back in one pass per channel.
#[derive(Clone, Copy)]
struct Unfold {
    kh: usize,
    kw: usize,
    pad: usize,
}

impl Unfold {
    fn out_size(&self, h: usize, w: usize) -> (usize, usize) {
        (
            h + 2 * self.pad + 1 - self.kh,
            w + 2 * self.pad + 1 - self.kw,
        )
    }

    /// Calls `f(row offset in a plane, input offset in a plane)` for each output
    /// position (y, x) whose tap (i, j) lands inside the h×w plane.
    fn tap(&self, (i, j): (usize, usize), (h, w): (usize, usize), mut f: impl FnMut(usize, usize)) {
        let (oh, ow) = self.out_size(h, w);
        for y in 0..oh {
            let Some(sy) = (y + i).checked_sub(self.pad).filter(|&v| v < h) else {
                continue;
            };
            for x in 0..ow {
                if let Some(sx) = (x + j).checked_sub(self.pad).filter(|&v| v < w) {
                    f(y * ow + x, sy * w + sx);
                }
            }
        }
    }
}

impl CustomOp1 for Unfold {
    fn name(&self) -> &'static str {
        "unfold"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, self.name())?;
        let (n, c, h, w) = l.shape().dims4()?;
        let (oh, ow) = self.out_size(h, w);
        let (rows, cols) = (c * self.kh * self.kw, n * oh * ow);
        let mut out = vec![0f32; rows * cols];
        out.par_chunks_mut(cols).enumerate().for_each(|(r, row)| {
            let (ch, ij) = (r / (self.kh * self.kw), r % (self.kh * self.kw));
            for b in 0..n {
                let plane = &x[(b * c + ch) * h * w..][..h * w];
                let dst = &mut row[b * oh * ow..][..oh * ow];
                self.tap((ij / self.kw, ij % self.kw), (h, w), |o, i| {
                    dst[o] = plane[i]
                });
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows, cols))))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &Fold(*self))?,
        ))
    }
}

/// col2im: the gradient of [`Unfold`].
struct Fold(Unfold);

impl CustomOp2 for Fold {
    fn name(&self) -> &'static str {
        "fold"
    }
    fn cpu_fwd(
        &self,
        _s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = contiguous(s2, l2, self.name())?;
        let (n, c, h, w) = l1.shape().dims4()?;
        let u = self.0;
        let (oh, ow) = u.out_size(h, w);
        let taps = u.kh * u.kw;
        let cols = n * oh * ow;
        // [C, N, H, W] so that each channel's planes are one chunk to add into.
        let mut by_channel = vec![0f32; c * n * h * w];
        by_channel
            .par_chunks_mut(n * h * w)
            .enumerate()
            .for_each(|(ch, planes)| {
                for ij in 0..taps {
                    let row = &g[(ch * taps + ij) * cols..][..cols];
                    for b in 0..n {
                        let plane = &mut planes[b * h * w..][..h * w];
                        let src = &row[b * oh * ow..][..oh * ow];
                        u.tap((ij / u.kw, ij % u.kw), (h, w), |o, i| plane[i] += src[o]);
                    }
                }
            });
        let mut dx = vec![0f32; n * c * h * w];
        dx.par_chunks_mut(c * h * w)
            .enumerate()
            .for_each(|(b, sample)| {
                for ch in 0..c {
                    sample[ch * h * w..][..h * w]
                        .copy_from_slice(&by_channel[(ch * n + b) * h * w..][..h * w]);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// The im2col matrix of a stride-1 convolution with a kh×kw kernel and `padding`.
pub fn unfold(x: &Tensor, kh: usize, kw: usize, padding: usize) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Unfold {
        kh,
        kw,
        pad: padding,
    })
}

/// max(0, x) with a one-pass gradient.
pub fn relu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Relu)
}

/// Max-pool of k×k windows with stride k, of max(0, x) when `relu`; one pass each
/// way. Other strides go to candle's own.
pub fn max_pool(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    relu: bool,
) -> candle_core::Result<Tensor> {
    if kernel != stride || kernel == 0 || x.rank() != 4 {
        let x = if relu { x.relu()? } else { x.clone() };
        return x.max_pool2d_with_stride(kernel, stride);
    }
    x.contiguous()?.apply_op1(Pool { k: kernel, relu })
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// The one-pass ops give candle's own values; the pool's gradient is checked by
    /// hand (each window's maximum receives its output's gradient, as in PyTorch:
    /// candle's own max-pool gradient is scaled by 1/k², which is why it is not the
    /// reference here), and ReLU's against candle's.
    #[test]
    fn one_pass_relu_and_pool_match_candles_ops() {
        let values: Vec<f32> = (0..2 * 3 * 6 * 6)
            .map(|i| ((i * 7919 % 251) as f32 / 125.0) - 1.0 + i as f32 * 1e-5)
            .collect();
        let x = Var::from_vec(values.clone(), (2, 3, 6, 6), &Device::Cpu).expect("var");
        let weights = Tensor::arange(1f32, 1.0 + 2.0 * 3.0 * 9.0, &Device::Cpu)
            .and_then(|t| t.reshape((2, 3, 3, 3)))
            .expect("weights");
        let flat = |t: &Tensor| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values")
        };
        for relu in [false, true] {
            let ours = super::max_pool(x.as_tensor(), 2, 2, relu).expect("ours");
            let theirs = if relu {
                x.as_tensor().relu().and_then(|t| t.max_pool2d(2))
            } else {
                x.as_tensor().max_pool2d(2)
            }
            .expect("theirs");
            assert_eq!(flat(&ours), flat(&theirs));
            let grads = (&ours * &weights)
                .and_then(|p| p.sum_all())
                .and_then(|l| l.backward())
                .expect("backward");
            let mut want = vec![0f32; values.len()];
            for plane in 0..6 {
                for (oy, ox) in (0..3).flat_map(|y| (0..3).map(move |x| (y, x))) {
                    let at = |dy: usize, dx: usize| plane * 36 + (2 * oy + dy) * 6 + 2 * ox + dx;
                    let best = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)]
                        .into_iter()
                        .fold(at(0, 0), |b, i| if values[i] > values[b] { i } else { b });
                    if !relu || values[best] > 0.0 {
                        want[best] = (plane * 9 + oy * 3 + ox + 1) as f32;
                    }
                }
            }
            assert_eq!(
                flat(grads.get(x.as_tensor()).expect("gradient")),
                want,
                "relu {relu}"
            );
        }
        let ours = super::relu(x.as_tensor()).expect("relu");
        let theirs = x.as_tensor().relu().expect("relu");
        let g = |t: &Tensor| {
            t.sqr()
                .and_then(|t| t.sum_all())
                .and_then(|l| l.backward())
                .ok()
                .and_then(|g| g.get(x.as_tensor()).cloned())
                .and_then(|t| t.flatten_all().and_then(|t| t.to_vec1::<f32>()).ok())
                .expect("gradient")
        };
        assert_eq!(g(&ours), g(&theirs));
    }
}
