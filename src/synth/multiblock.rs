//! Multi-vector objects (DESIGN §4.6): every object has several blocks (think image, caption,
//! title embeddings from different encoders) whose values differ in scale by a chosen factor.
//!
//! Model (all draws from the seed, see `docs/GENERATOR.md`):
//! - `concepts` shared topics; block b has its own centre per concept,
//!   `c_{b,j} ~ N(0, diag(v_b))` with a decaying per-dimension spread `v_{b,k} = 1 / (1 + k/16)`
//!   (embedding-like: a few strong directions, many weak ones);
//! - a row draws its concept `j`; each block follows it with probability `shared`, or else an
//!   independent concept `j_b` (so the blocks agree only partly and a block's nearest
//!   neighbours are not the object's);
//! - block b of the row is `scale_b · (c_{b, j_b} + noise · sqrt(v_b) ⊙ z)`, `z ~ N(0, I)`.
//!
//! Queries are independent draws from the same model (held out, never base rows). Each block
//! has its own random stream per row, so one block's file can be written alone
//! ([`MultiblockModel::block`]).

use std::ops::Range;

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{Chunk, Split, SplitSizes, SynthError, SynthModel, TAG_MODEL, param_error, row_rng};
use crate::data::Matrix;

/// Kind tag of this generator's random streams.
const KIND_MULTIBLOCK: u64 = 3;

/// Parameters of the multi-block generator.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiblockParams {
    /// Dimension of each block.
    pub dims: Vec<usize>,
    /// Scale factor of each block (the ratio of the largest to the smallest is the "scale
    /// ratio" of docs/BENCHMARKS.md).
    pub scales: Vec<f32>,
    /// Concepts (mixture components) objects are drawn from.
    pub concepts: usize,
    /// Probability that a block follows the object's concept.
    pub shared: f32,
    /// Within-concept spread relative to the spread of the centres.
    pub noise: f32,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Default for MultiblockParams {
    /// Three blocks of 128, 96 and 64 dims at scales 1, 10, 100; 256 concepts, blocks follow
    /// the object's concept with probability 0.6, noise 0.7.
    fn default() -> Self {
        Self {
            dims: vec![128, 96, 64],
            scales: vec![1.0, 10.0, 100.0],
            concepts: 256,
            shared: 0.6,
            noise: 0.7,
            seed: 0,
        }
    }
}

/// A built model: per block, per concept centres.
#[derive(Debug, Clone)]
pub struct MultiblockModel {
    params: MultiblockParams,
    sizes: SplitSizes,
    /// Per block: `concepts × dim_b` centres.
    centres: Vec<Matrix<f32>>,
    /// Per block: per-dimension standard deviation `sqrt(v_{b,k})`.
    spreads: Vec<Vec<f32>>,
}

impl MultiblockModel {
    /// The model for `params` and split sizes `sizes`; fails on parameters out of range.
    pub fn new(params: MultiblockParams, sizes: SplitSizes) -> Result<Self, SynthError> {
        if params.dims.is_empty() || params.dims.contains(&0) {
            return Err(param_error(
                "dims",
                "at least one block, each of dimension ≥ 1",
            ));
        }
        if params.scales.len() != params.dims.len()
            || params.scales.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(param_error(
                "scales",
                format!(
                    "one positive scale per block ({} blocks)",
                    params.dims.len()
                ),
            ));
        }
        if params.concepts == 0 {
            return Err(param_error("concepts", "at least 1"));
        }
        if !(0.0..=1.0).contains(&params.shared) || params.noise.is_nan() || params.noise < 0.0 {
            return Err(param_error("shared/noise", "shared in [0, 1], noise ≥ 0"));
        }
        let mut centres = Vec::with_capacity(params.dims.len());
        let mut spreads = Vec::with_capacity(params.dims.len());
        for (b, &d) in params.dims.iter().enumerate() {
            let sd: Vec<f32> = (0..d)
                .map(|k| (1.0 / (1.0 + k as f32 / 16.0)).sqrt())
                .collect();
            let mut m = Matrix::zeros(params.concepts, d).expect("d ≥ 1");
            for j in 0..params.concepts {
                let mut rng = row_rng(
                    params.seed,
                    TAG_MODEL,
                    (b * params.concepts + j) as u64,
                    KIND_MULTIBLOCK,
                );
                for (o, &s) in m.row_mut(j).iter_mut().zip(&sd) {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    *o = s * z;
                }
            }
            centres.push(m);
            spreads.push(sd);
        }
        Ok(Self {
            params,
            sizes,
            centres,
            spreads,
        })
    }

    /// The parameters it was made with.
    pub fn params(&self) -> &MultiblockParams {
        &self.params
    }

    /// Number of blocks.
    pub fn blocks(&self) -> usize {
        self.params.dims.len()
    }

    /// The concept of `row` of `split`.
    fn concept(&self, split: Split, row: u64) -> usize {
        let mut rng = row_rng(self.params.seed, split.tag(), row, KIND_MULTIBLOCK);
        rng.random_range(0..self.params.concepts)
    }

    /// Block `b` of `row` of `split`, written into `out`.
    fn block_into(&self, split: Split, row: u64, b: usize, out: &mut [f32]) {
        let p = &self.params;
        // Block streams: kind tags above the row stream's, one per block.
        let mut rng = row_rng(
            p.seed,
            split.tag(),
            row,
            KIND_MULTIBLOCK + ((b as u64 + 1) << 8),
        );
        let j = if rng.random::<f32>() < p.shared {
            self.concept(split, row)
        } else {
            rng.random_range(0..p.concepts)
        };
        let c = self.centres[b].row(j);
        let scale = p.scales[b];
        for ((o, &c), &s) in out.iter_mut().zip(c).zip(&self.spreads[b]) {
            let z: f32 = StandardNormal.sample(&mut rng);
            *o = scale * (c + p.noise * s * z);
        }
    }

    /// Block `b` alone as a [`SynthModel`] (for writing its files).
    pub fn block(&self, b: usize) -> BlockModel<'_> {
        assert!(b < self.blocks(), "block {b} of {}", self.blocks());
        BlockModel { model: self, b }
    }
}

/// One block of a [`MultiblockModel`].
#[derive(Debug, Clone, Copy)]
pub struct BlockModel<'a> {
    model: &'a MultiblockModel,
    b: usize,
}

impl SynthModel for BlockModel<'_> {
    fn dim(&self) -> usize {
        self.model.params.dims[self.b]
    }

    fn sizes(&self) -> SplitSizes {
        self.model.sizes
    }

    fn has_partners(&self) -> bool {
        false
    }

    fn rows(&self, split: Split, range: Range<u64>) -> Chunk {
        let total = self.model.sizes.rows(split);
        assert!(
            range.start <= range.end && range.end <= total,
            "rows {range:?} outside the {total} rows of {split:?}"
        );
        let mut m = Matrix::zeros((range.end - range.start) as usize, self.dim()).expect("dim ≥ 1");
        for (i, r) in range.clone().enumerate() {
            self.model.block_into(split, r, self.b, m.row_mut(i));
        }
        Chunk {
            first_row: range.start,
            vectors: m,
            partners: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_seeded_scaled_and_share_concepts() {
        let sizes = SplitSizes {
            base: 2000,
            queries: 10,
            training: 0,
        };
        let p = MultiblockParams {
            dims: vec![8, 4],
            scales: vec![1.0, 100.0],
            concepts: 4,
            seed: 3,
            ..MultiblockParams::default()
        };
        let m = MultiblockModel::new(p.clone(), sizes).unwrap();
        let a = m.block(0).rows(Split::Base, 0..2000).vectors;
        let b = m.block(1).rows(Split::Base, 0..2000).vectors;
        // Same seed, same rows; any sub-range reproduces.
        let again = MultiblockModel::new(p, sizes).unwrap();
        assert_eq!(
            again.block(1).rows(Split::Base, 100..110).vectors.row(3),
            b.row(103)
        );
        let rms = |x: &Matrix<f32>| {
            (x.as_slice().iter().map(|v| (v * v) as f64).sum::<f64>() / x.as_slice().len() as f64)
                .sqrt()
        };
        let ratio = rms(&b) / rms(&a);
        assert!((50.0..200.0).contains(&ratio), "scale ratio {ratio}");
        // Queries are a different stream.
        assert_ne!(
            m.block(0).rows(Split::Queries, 0..1).vectors.row(0),
            a.row(0)
        );
        assert!(
            MultiblockModel::new(
                MultiblockParams {
                    scales: vec![1.0],
                    ..MultiblockParams::default()
                },
                sizes
            )
            .is_err()
        );
    }
}
