//! The query engine (DESIGN §3): open an index, then per query route with the anchors, score
//! PQ codes in RAM, read only the best candidates' sectors in one batch and rerank exactly.

mod batch;
mod blocks;
mod candidates;
mod check;
mod error;
mod exact;
mod generation;
mod hints;
mod index;
mod inflight;
pub(crate) mod live;
pub(crate) mod merge;
mod merge_plan;
mod params;
mod query;
mod read;
mod results;
mod sharded;
mod shared_rows;
mod task;

pub use crate::route::DEFAULT_ROUTE_MIN_K;
pub use batch::{BatchOptions, BatchResult, DEFAULT_INFLIGHT, search_batch};
pub use blocks::{IndexBlocks, Weighting};
pub use check::QueryScoring;
pub use error::SearchError;
pub use exact::{ExactParams, ExactQuery, ExactSearcher, exact_batch};
pub use generation::LiveIndex;
pub use index::{Index, IndexCore, LiveInfo};
pub use merge::{ClusterChurn, ClusterRecord};
// The server's workers run the batch's loop.
#[cfg(feature = "serve")]
pub(crate) use inflight::{Inflight, Jobs, Next, Step};
pub use params::{QueryStats, RerankDistance, SearchParams, lccmd_weights};
pub use query::{QueryStep, RoutePlan, Searcher};
pub use results::results_table;
pub use sharded::{
    REQUEST_KNOB_BYTES, RESULT_BYTES, ShardRouter, ShardedBatch, ShardedIndex, ShardedStats,
    exact_second_round, is_sharded, merge_answers, open_shard, search_sharded_batch,
};
