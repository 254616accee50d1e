//! Multi-vector objects and queries (DESIGN §4.6): an object carries several vectors (blocks:
//! an image embedding, its caption's, its title's), stored concatenated in one index; a query
//! gives any non-empty subset of the blocks with weights, and the distance is
//! `Σ_b w_b · D_b` on per-block standardised values ([`scale`] has the definitions).
//!
//! - [`BlockLayout`]: names and dimension ranges of the blocks;
//! - [`BlockFiles`]: one base file per block, read as concatenated rows (streamed);
//! - [`BlockQueries`]: query files for a subset of the blocks;
//! - [`scale`]: spreads, block scales, query factors and the per-block transforms;
//! - [`weighted_exact_knn`]: the weighted ground truth by brute force (`m3 gt --block`);
//!
//! The index side lives in `build` (block-aligned PQ, stored scales), `format::blocks`
//! (`blocks.m3`) and `search` (weighted routing, PQ scan of the present subspaces, rerank).

mod error;
mod exact;
mod files;
mod layout;
pub mod scale;

pub use error::BlockError;
pub use exact::{WeightedKnnParams, base_spreads, internal_metric, weighted_exact_knn};
pub use files::{BlockFiles, BlockQueries};
pub(crate) use layout::check_weight;
pub use layout::{BLOCK_NAME_BYTES, Block, BlockLayout, check_block_name, split_assignment};
