//! Unstructured sparse kernels for pruned linear and convolution layers: the weight's
//! non-zeros in compressed sparse rows, multiplied against the input with the batch
//! (or a convolution's output positions) as the contiguous axis, so each non-zero is
//! one `axpy` over that axis. `slimscope bench --sparse` times them against the dense
//! path to find the sparsity at which skipping zeros starts to pay on this machine.

use rayon::prelude::*;

/// A `[rows, cols]` matrix's non-zeros, row by row.
#[derive(Debug, Clone)]
pub struct CsrMatrix {
    pub rows: usize,
    pub cols: usize,
    /// `rows + 1` offsets into `cols_of` and `values`.
    row_start: Vec<usize>,
    cols_of: Vec<u32>,
    values: Vec<f32>,
}

/// Output rows one parallel task computes.
const ROWS_PER_TASK: usize = 8;
/// Multiply-adds below which one thread computes the whole product.
const SERIAL_WORK: usize = 1 << 16;

impl CsrMatrix {
    /// The non-zeros of the row-major `dense` (`rows × cols`).
    pub fn from_dense(dense: &[f32], rows: usize, cols: usize) -> CsrMatrix {
        assert_eq!(dense.len(), rows * cols, "a {rows} × {cols} matrix");
        let mut row_start = Vec::with_capacity(rows + 1);
        let (mut cols_of, mut values) = (Vec::new(), Vec::new());
        row_start.push(0);
        for row in dense.chunks_exact(cols.max(1)).take(rows) {
            for (c, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    cols_of.push(c as u32);
                    values.push(v);
                }
            }
            row_start.push(values.len());
        }
        row_start.resize(rows + 1, values.len());
        CsrMatrix {
            rows,
            cols,
            row_start,
            cols_of,
            values,
        }
    }

    /// Non-zeros stored.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// `out[r, j] = bias[r] + Σ_c self[r, c] · x[c, j]` for `x` of `cols × n` and `out`
    /// of `rows × n` (both row-major): the product with `n` as the contiguous axis.
    pub fn multiply(&self, x: &[f32], n: usize, bias: Option<&[f32]>, out: &mut [f32]) {
        self.multiply_on(x, n, bias, out, self.nnz() * n >= SERIAL_WORK);
    }

    /// [`CsrMatrix::multiply`], on the pool's threads when `parallel`.
    fn multiply_on(
        &self,
        x: &[f32],
        n: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        parallel: bool,
    ) {
        assert_eq!(x.len(), self.cols * n, "x is cols × n");
        assert_eq!(out.len(), self.rows * n, "out is rows × n");
        if n == 0 {
            return;
        }
        if n == 1 {
            // One sample: a gathered dot product per row.
            let row = |r: usize| -> f32 {
                let span = self.row_start[r]..self.row_start[r + 1];
                let (cols, values) = (&self.cols_of[span.clone()], &self.values[span]);
                let mut acc = [0.0f32; 4];
                let (c4, v4) = (cols.chunks_exact(4), values.chunks_exact(4));
                let (cr, vr) = (c4.remainder(), v4.remainder());
                for (c, v) in c4.zip(v4) {
                    for k in 0..4 {
                        acc[k] += v[k] * x[c[k] as usize];
                    }
                }
                let tail: f32 = cr.iter().zip(vr).map(|(&c, &v)| v * x[c as usize]).sum();
                bias.map_or(0.0, |b| b[r]) + (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
            };
            if parallel {
                out.par_iter_mut()
                    .enumerate()
                    .for_each(|(r, y)| *y = row(r));
            } else {
                out.iter_mut().enumerate().for_each(|(r, y)| *y = row(r));
            }
            return;
        }
        let rows = |task: usize, chunk: &mut [f32]| {
            for (k, acc) in chunk.chunks_exact_mut(n).enumerate() {
                let r = task * ROWS_PER_TASK + k;
                acc.fill(bias.map_or(0.0, |b| b[r]));
                let span = self.row_start[r]..self.row_start[r + 1];
                for (&c, &v) in self.cols_of[span.clone()].iter().zip(&self.values[span]) {
                    let c = c as usize;
                    for (a, &xv) in acc.iter_mut().zip(&x[c * n..(c + 1) * n]) {
                        *a += v * xv;
                    }
                }
            }
        };
        // Work too small to share costs more in hand-offs than it saves.
        if !parallel {
            out.chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .for_each(|(task, chunk)| rows(task, chunk));
        } else {
            out.par_chunks_mut(ROWS_PER_TASK * n)
                .enumerate()
                .for_each(|(task, chunk)| rows(task, chunk));
        }
    }

    /// A linear layer on `batch` samples of `cols` features (row-major
    /// `batch × cols`): `batch × rows` outputs, as `x · selfᵀ + bias`.
    pub fn linear(&self, x: &[f32], batch: usize, bias: Option<&[f32]>) -> Vec<f32> {
        if batch == 1 {
            let mut y = vec![0.0; self.rows];
            self.multiply(x, 1, bias, &mut y);
            return y;
        }
        let xt = transpose(x, batch, self.cols);
        let mut yt = vec![0.0; self.rows * batch];
        self.multiply(&xt, batch, bias, &mut yt);
        transpose(&yt, self.rows, batch)
    }
}

/// The `cols × rows` transpose of the row-major `rows × cols` `a`.
pub fn transpose(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; a.len()];
    // Blocks of B output rows (input columns) per task keep both sides in cache.
    const B: usize = 32;
    if rows == 0 || cols == 0 {
        return t;
    }
    t.par_chunks_mut(B * rows)
        .enumerate()
        .for_each(|(block, out)| {
            let c0 = block * B;
            for r0 in (0..rows).step_by(B) {
                for (dc, line) in out.chunks_exact_mut(rows).enumerate() {
                    let c = c0 + dc;
                    for r in r0..(r0 + B).min(rows) {
                        line[r] = a[r * cols + c];
                    }
                }
            }
        });
    t
}

/// A convolution's geometry: `[out, in, kh, kw]` weights, stride 1, `padding` on
/// every side, over `in × h × w` samples.
#[derive(Debug, Clone, Copy)]
pub struct ConvShape {
    pub out: usize,
    pub input: usize,
    pub kernel: (usize, usize),
    pub padding: usize,
    pub size: (usize, usize),
}

impl ConvShape {
    /// The output's height and width.
    pub fn out_size(&self) -> (usize, usize) {
        let (h, w) = self.size;
        let p = 2 * self.padding;
        (
            (h + p + 1).saturating_sub(self.kernel.0),
            (w + p + 1).saturating_sub(self.kernel.1),
        )
    }

    /// One sample's patches: `(in · kh · kw) × (oh · ow)`, zero outside the input.
    pub fn im2col(&self, sample: &[f32]) -> Vec<f32> {
        let (h, w) = self.size;
        let (kh, kw) = self.kernel;
        let (oh, ow) = self.out_size();
        let positions = oh * ow;
        let mut cols = vec![0.0; self.input * kh * kw * positions];
        for c in 0..self.input {
            for i in 0..kh {
                for j in 0..kw {
                    let row = ((c * kh + i) * kw + j) * positions;
                    for y in 0..oh {
                        let sy = (y + i) as isize - self.padding as isize;
                        if sy < 0 || sy >= h as isize {
                            continue;
                        }
                        for x in 0..ow {
                            let sx = (x + j) as isize - self.padding as isize;
                            if sx >= 0 && sx < w as isize {
                                cols[row + y * ow + x] =
                                    sample[(c * h + sy as usize) * w + sx as usize];
                            }
                        }
                    }
                }
            }
        }
        cols
    }

    /// The convolution of `batch` samples with the `[out, in·kh·kw]` sparse weight:
    /// `batch × out × oh × ow`.
    pub fn sparse(
        &self,
        weight: &CsrMatrix,
        x: &[f32],
        batch: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let (oh, ow) = self.out_size();
        let per_in = self.input * self.size.0 * self.size.1;
        let per_out = self.out * oh * ow;
        let mut y = vec![0.0; batch * per_out];
        let one = |(sample, out): (&[f32], &mut [f32]), parallel: bool| {
            let cols = self.im2col(sample);
            weight.multiply_on(&cols, oh * ow, bias, out, parallel);
        };
        let pairs = x.chunks_exact(per_in).zip(y.chunks_exact_mut(per_out));
        if batch == 1 {
            pairs.for_each(|p| one(p, weight.nnz() * oh * ow >= SERIAL_WORK));
        } else {
            // Samples in parallel, each on one thread.
            pairs.par_bridge().for_each(|p| one(p, false));
        }
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-derived: [[1, 0, 2], [0, 0, 0], [0, 3, 0]] times two samples.
    #[test]
    fn a_small_product_by_hand() {
        let w = [1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0];
        let m = CsrMatrix::from_dense(&w, 3, 3);
        assert_eq!(m.nnz(), 3);
        // Samples (1, 2, 3) and (−1, 0, 1); bias (0.5, 1, −1).
        let y = m.linear(&[1.0, 2.0, 3.0, -1.0, 0.0, 1.0], 2, Some(&[0.5, 1.0, -1.0]));
        assert_eq!(y, vec![7.5, 1.0, 5.0, 1.5, 1.0, -1.0]);
    }

    /// Seeded values in [−1, 1), a `zeros` share of them exactly 0.
    fn values(n: usize, zeros: f64, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                if u < zeros {
                    0.0
                } else {
                    (2.0 * (u - zeros) / (1.0 - zeros) - 1.0) as f32
                }
            })
            .collect()
    }

    /// Against a float64 dense product written out here, at a batch of 1 (the dot
    /// path), 5 (serial) and 300 (parallel), with all-zero rows among them.
    #[test]
    fn linear_equals_a_float64_dense_product() {
        let (rows, cols) = (37, 53);
        let mut w = values(rows * cols, 0.8, 1);
        w[3 * cols..4 * cols].fill(0.0);
        let bias = values(rows, 0.0, 2);
        let m = CsrMatrix::from_dense(&w, rows, cols);
        for batch in [1, 5, 300] {
            let x = values(batch * cols, 0.1, 3 + batch as u64);
            let y = m.linear(&x, batch, Some(&bias));
            for b in 0..batch {
                for r in 0..rows {
                    let want: f64 = f64::from(bias[r])
                        + (0..cols)
                            .map(|c| f64::from(w[r * cols + c]) * f64::from(x[b * cols + c]))
                            .sum::<f64>();
                    let got = f64::from(y[b * rows + r]);
                    assert!(
                        (got - want).abs() <= 1e-5,
                        "batch {batch} [{b}, {r}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    /// Against a float64 direct convolution written out here (zero padding), one
    /// sample and a batch.
    #[test]
    fn convolution_equals_a_float64_direct_one() {
        let shape = ConvShape {
            out: 5,
            input: 3,
            kernel: (3, 2),
            padding: 1,
            size: (6, 7),
        };
        let (oh, ow) = shape.out_size();
        let k = 3 * 3 * 2;
        let w = values(5 * k, 0.7, 9);
        let bias = values(5, 0.0, 10);
        let m = CsrMatrix::from_dense(&w, 5, k);
        for batch in [1, 4] {
            let x = values(batch * 3 * 6 * 7, 0.0, 11 + batch as u64);
            let y = shape.sparse(&m, &x, batch, Some(&bias));
            for b in 0..batch {
                for o in 0..5 {
                    for i in 0..oh {
                        for j in 0..ow {
                            let mut want = f64::from(bias[o]);
                            for c in 0..3 {
                                for a in 0..3 {
                                    for d in 0..2 {
                                        let (sy, sx) = (i + a, j + d);
                                        if sy < 1 || sx < 1 || sy > 6 || sx > 7 {
                                            continue;
                                        }
                                        let xv = x[((b * 3 + c) * 6 + sy - 1) * 7 + sx - 1];
                                        want += f64::from(w[((o * 3 + c) * 3 + a) * 2 + d])
                                            * f64::from(xv);
                                    }
                                }
                            }
                            let got = f64::from(y[((b * 5 + o) * oh + i) * ow + j]);
                            assert!(
                                (got - want).abs() <= 1e-5,
                                "{b} {o} {i} {j}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Hand-derived: a 2×2 kernel of ones over a 3×3 ramp with padding 1 sums each
    /// 2×2 window (zeros outside).
    #[test]
    fn a_small_convolution_by_hand() {
        let shape = ConvShape {
            out: 1,
            input: 1,
            kernel: (2, 2),
            padding: 1,
            size: (3, 3),
        };
        assert_eq!(shape.out_size(), (4, 4));
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let w = CsrMatrix::from_dense(&[1.0; 4], 1, 4);
        let y = shape.sparse(&w, &x, 1, None);
        #[rustfmt::skip]
        let want = [
            1.0, 3.0, 5.0, 3.0,
            5.0, 12.0, 16.0, 9.0,
            11.0, 24.0, 28.0, 15.0,
            7.0, 15.0, 17.0, 9.0,
        ];
        assert_eq!(y, want);
    }
}
