//! Product quantization (Jégou, Douze, Schmid, TPAMI 2011): how is every stored vector kept in
//! RAM in a few bytes, and how are thousands of them scored per query?
//!
//! The dimensions are split into `M` contiguous subspaces (boundaries can be given, so a
//! multi-vector object's blocks never share a subspace); each subspace has 256 codewords learned
//! by k-means, and a vector is stored as `M` bytes, the nearest codeword per subspace. At query
//! time a lookup table of `M × 256` partial distances is built once ([`ProductQuantizer::ip_table`],
//! [`ProductQuantizer::l2_table`], [`ProductQuantizer::weighted_l2_table`] — per-dimension
//! weights, e.g. LC-CMD's, fold into the table at no scan cost), and every code is scored with
//! `M` table lookups ([`adc_scan`], asymmetric distance computation).
//!
//! The index encodes residuals `x − c` to the cluster centroid (IVF-ADC): for inner product,
//! `q·x̂ = q·c + Σ_m T[m][code_m]` with one table shared by all clusters; for L2,
//! `|q − x̂|² = |q − c|² − 2 Σ_m T_ip[m][code_m] + (|r̂|² + 2 c·r̂)`, where the last term is a
//! per-record correction stored beside the code.

mod scan;
mod train;

use crate::data::{Matrix, MatrixView};

pub use scan::{adc_scan, adc_scan_span, adc_score, adc_score_spans};
pub use train::PqParams;

/// Codewords per subspace (codes are bytes).
pub const CODEWORDS: usize = 256;

/// Errors of PQ training.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PqError {
    #[error("PQ needs 1 ≤ subspaces ≤ dim, got {subspaces} subspaces for dim {dim}")]
    BadSubspaces { subspaces: usize, dim: usize },
    #[error("PQ subspace boundaries {bounds:?} must rise strictly from 0 to dim {dim}")]
    BadBounds { bounds: Vec<usize>, dim: usize },
    #[error("PQ training needs at least one row")]
    Empty,
    #[error("PQ training failed in subspace {subspace}: {source}")]
    KMeans {
        subspace: usize,
        #[source]
        source: crate::kmeans::KMeansError,
    },
}

/// A trained product quantizer: subspace boundaries and codebooks.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductQuantizer {
    dim: usize,
    /// `M + 1` boundaries, `0 = b_0 < b_1 < … < b_M = dim`.
    bounds: Vec<usize>,
    /// Subspace after subspace: `256 × (b_{m+1} − b_m)` floats each; `256 · dim` in all.
    codebooks: Vec<f32>,
    /// The same codewords dimension-major: for dimension `d`, the 256 codewords' `d`-th
    /// coordinates in a row (`dim × 256`), so a lookup table is built 256 entries at a time
    /// (vectorised) instead of one short dot product per codeword. Derived from `codebooks`.
    by_dimension: Vec<f32>,
}

impl ProductQuantizer {
    /// Assembles a quantizer from stored parts (e.g. an index file), checking their shapes.
    pub fn from_parts(
        dim: usize,
        bounds: Vec<usize>,
        codebooks: Vec<f32>,
    ) -> Result<Self, PqError> {
        check_bounds(&bounds, dim)?;
        if codebooks.len() != CODEWORDS * dim {
            return Err(PqError::BadBounds { bounds, dim });
        }
        let mut by_dimension = vec![0f32; CODEWORDS * dim];
        for m in 0..bounds.len() - 1 {
            let (lo, hi) = (bounds[m], bounds[m + 1]);
            let book = &codebooks[CODEWORDS * lo..CODEWORDS * hi];
            for (j, w) in book.chunks_exact(hi - lo).enumerate() {
                for (k, &v) in w.iter().enumerate() {
                    by_dimension[(lo + k) * CODEWORDS + j] = v;
                }
            }
        }
        Ok(Self {
            dim,
            bounds,
            codebooks,
            by_dimension,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of subspaces `M` (= bytes per code).
    pub fn subspaces(&self) -> usize {
        self.bounds.len() - 1
    }

    pub fn bounds(&self) -> &[usize] {
        &self.bounds
    }

    /// All codebooks, subspace after subspace.
    pub fn codebooks(&self) -> &[f32] {
        &self.codebooks
    }

    /// The 256 codewords of subspace `m` as a `256 × dsub` view.
    pub fn codebook(&self, m: usize) -> MatrixView<'_, f32> {
        let (lo, hi) = (self.bounds[m], self.bounds[m + 1]);
        MatrixView::new(&self.codebooks[CODEWORDS * lo..CODEWORDS * hi], hi - lo)
            .expect("codebook shape checked at construction")
    }

    /// The code of one vector: the nearest codeword per subspace (ties to the lower index).
    pub fn encode(&self, x: &[f32], code: &mut [u8]) {
        assert_eq!(x.len(), self.dim, "encode: dimension");
        assert_eq!(code.len(), self.subspaces(), "encode: code length");
        for (m, c) in code.iter_mut().enumerate() {
            let sub = &x[self.bounds[m]..self.bounds[m + 1]];
            let book = self.codebook(m);
            let mut best = (0usize, f32::INFINITY);
            for (j, w) in book.iter_rows().enumerate() {
                let d = crate::distance::l2_sq(sub, w);
                if d < best.1 {
                    best = (j, d);
                }
            }
            *c = best.0 as u8;
        }
    }

    /// Codes of every row (`rows × M` bytes), blocks of rows in parallel on the current rayon
    /// pool. Per block and subspace one matrix product gives `x·w` for all 256 codewords and
    /// the code is `argmin |w|² − 2 x·w` (ties to the lower index), as [`Self::encode`].
    pub fn encode_all(&self, data: MatrixView<'_, f32>) -> Matrix<u8> {
        use rayon::prelude::*;
        assert_eq!(data.dim(), self.dim, "encode_all: dimension");
        const BLOCK: usize = 256;
        let m = self.subspaces();
        let norms: Vec<Vec<f32>> = (0..m)
            .map(|s| crate::linalg::row_norms_sq(self.codebook(s)))
            .collect();
        let mut codes = vec![0u8; data.rows() * m];
        codes
            .par_chunks_mut(BLOCK * m)
            .enumerate()
            .for_each(|(b, out)| {
                let rows = out.len() / m;
                let block = data.slice_rows(b * BLOCK, b * BLOCK + rows);
                let mut sub = Vec::new();
                let mut dots = Vec::new();
                for s in 0..m {
                    let (lo, hi) = (self.bounds[s], self.bounds[s + 1]);
                    sub.clear();
                    for r in block.iter_rows() {
                        sub.extend_from_slice(&r[lo..hi]);
                    }
                    let subv = MatrixView::new(&sub, hi - lo).expect("hi > lo");
                    crate::linalg::dot_products(subv, self.codebook(s), &mut dots);
                    for i in 0..rows {
                        let row = &dots[i * CODEWORDS..(i + 1) * CODEWORDS];
                        let mut best = (0usize, f32::INFINITY);
                        for (j, (&d, &n)) in row.iter().zip(&norms[s]).enumerate() {
                            let v = n - 2.0 * d;
                            if v < best.1 {
                                best = (j, v);
                            }
                        }
                        out[i * m + s] = best.0 as u8;
                    }
                }
            });
        Matrix::from_vec(codes, m).expect("m >= 1")
    }

    /// The reconstruction `x̂` of a code.
    pub fn decode(&self, code: &[u8], out: &mut [f32]) {
        assert_eq!(code.len(), self.subspaces(), "decode: code length");
        assert_eq!(out.len(), self.dim, "decode: dimension");
        for (m, &c) in code.iter().enumerate() {
            let (lo, hi) = (self.bounds[m], self.bounds[m + 1]);
            out[lo..hi].copy_from_slice(self.codebook(m).row(c as usize));
        }
    }

    /// `table[m·256 + j] = q_m · w_{m,j}` (inner products with every codeword), built from the
    /// dimension-major copy of the codebooks: 256 lanes per dimension, which the compiler
    /// vectorises, where a short dot product per codeword (3–6 dimensions) would not be.
    pub fn ip_table(&self, q: &[f32], table: &mut Vec<f32>) {
        assert_eq!(q.len(), self.dim, "ip_table: dimension");
        table.clear();
        table.resize(self.subspaces() * CODEWORDS, 0.0);
        for s in 0..self.subspaces() {
            self.ip_table_one(q, s, table);
        }
    }

    /// Fills subspace `s`'s 256 entries of an inner-product table (`table` is `M × 256`):
    /// `t_j = ((0 + q_lo·w_j,lo) + q_lo+1·w_j,lo+1) + …`, the same sum in the same order as a
    /// dot product over the subspace, computed for all 256 codewords at once.
    fn ip_table_one(&self, q: &[f32], s: usize, table: &mut [f32]) {
        let (lo, hi) = (self.bounds[s], self.bounds[s + 1]);
        let t: &mut [f32; CODEWORDS] = (&mut table[s * CODEWORDS..(s + 1) * CODEWORDS])
            .try_into()
            .expect("256 entries");
        let w = &self.by_dimension[lo * CODEWORDS..hi * CODEWORDS];
        (crate::simd::kernels().lut_ip_256)(&q[lo..hi], w, t);
    }

    /// Like [`Self::ip_table`] for the subspaces in `spans` only (a multi-vector query's
    /// present blocks); the other subspaces' entries are zero and cost nothing.
    pub fn ip_table_spans(
        &self,
        q: &[f32],
        spans: &[std::ops::Range<usize>],
        table: &mut Vec<f32>,
    ) {
        assert_eq!(q.len(), self.dim, "ip_table_spans: dimension");
        table.clear();
        table.resize(self.subspaces() * CODEWORDS, 0.0);
        for s in spans.iter().flat_map(|r| r.clone()) {
            self.ip_table_one(q, s, table);
        }
    }

    /// `table[m·256 + j] = |q_m − w_{m,j}|²`, one short loop per codeword. (The
    /// query engine scores L2 through `ip_table` and stored corrections; this table serves
    /// callers that want plain ADC distances.)
    pub fn l2_table(&self, q: &[f32], table: &mut Vec<f32>) {
        assert_eq!(q.len(), self.dim, "l2_table: dimension");
        self.fill_table(table, |lo, hi, w| {
            q[lo..hi]
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b) * (a - b))
                .sum()
        });
    }

    /// `table[m·256 + j] = Σ_{k ∈ m} weights_k (q_k − w_{m,j,k})²`: per-dimension weights folded
    /// into the table, so scanning costs the same as plain L2.
    pub fn weighted_l2_table(&self, q: &[f32], weights: &[f32], table: &mut Vec<f32>) {
        assert_eq!(q.len(), self.dim, "weighted_l2_table: dimension");
        assert_eq!(weights.len(), self.dim, "weighted_l2_table: weights");
        self.fill_table(table, |lo, hi, w| {
            q[lo..hi]
                .iter()
                .zip(&weights[lo..hi])
                .zip(w)
                .map(|((a, u), b)| u * (a - b) * (a - b))
                .sum()
        });
    }

    /// One entry per (subspace, codeword): `f(lo, hi, codeword)` over the subspace's
    /// dimensions `lo..hi`.
    fn fill_table(&self, table: &mut Vec<f32>, f: impl Fn(usize, usize, &[f32]) -> f32) {
        table.clear();
        table.resize(self.subspaces() * CODEWORDS, 0.0);
        for (s, t) in table.chunks_exact_mut(CODEWORDS).enumerate() {
            let (lo, hi) = (self.bounds[s], self.bounds[s + 1]);
            let book = &self.codebooks[CODEWORDS * lo..CODEWORDS * hi];
            for (t, w) in t.iter_mut().zip(book.chunks_exact(hi - lo)) {
                *t = f(lo, hi, w);
            }
        }
    }
}

/// Subspace boundaries splitting `dim` into `m` nearly equal parts (the first `dim mod m`
/// subspaces get one dimension more).
pub fn even_bounds(dim: usize, m: usize) -> Result<Vec<usize>, PqError> {
    if m == 0 || m > dim {
        return Err(PqError::BadSubspaces { subspaces: m, dim });
    }
    let (q, r) = (dim / m, dim % m);
    let mut b = vec![0];
    for s in 0..m {
        b.push(b[s] + q + usize::from(s < r));
    }
    Ok(b)
}

fn check_bounds(bounds: &[usize], dim: usize) -> Result<(), PqError> {
    let ok = bounds.len() >= 2
        && bounds[0] == 0
        && *bounds.last().expect("len >= 2") == dim
        && bounds.windows(2).all(|w| w[0] < w[1]);
    if ok {
        Ok(())
    } else {
        Err(PqError::BadBounds {
            bounds: bounds.to_vec(),
            dim,
        })
    }
}

#[cfg(test)]
mod tests;
