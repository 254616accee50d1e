//! The query engine (DESIGN §3): open an index, then per query route with the anchors, score
//! PQ codes in RAM, read only the best candidates' sectors in one batch and rerank exactly.

mod batch;
mod blocks;
mod calibrate;
mod check;
mod error;
mod evaluate;
mod exact;
mod index;
mod params;
mod query;
mod read;
mod route;

pub use batch::{BatchOptions, BatchResult, DEFAULT_INFLIGHT, search_batch};
pub use calibrate::{
    Calibration, CalibrationBase, CalibrationParams, CalibrationPoint, calibrate, partner_hits,
};
pub use check::QueryScoring;
pub use error::SearchError;
pub use evaluate::{BenchPoint, evaluate, percentile, results_table};
pub use exact::{ExactParams, ExactQuery, ExactSearcher, exact_batch};
pub use index::Index;
pub(crate) use index::base_order;
pub use params::{QueryStats, RerankDistance, SearchParams, lccmd_weights};
pub use query::{QueryStep, Searcher};
pub use route::DEFAULT_ROUTE_MIN_K;
pub(crate) use route::Router;
