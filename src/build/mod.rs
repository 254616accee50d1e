//! Building an index (DESIGN §2): train → query routing → assign → neighbour lists and
//! layout → publish. The base is streamed; it is never held whole in RAM.

mod assign;
mod error;
mod extsort;
mod hints;
mod layout;
mod params;
mod pipeline;
mod refine;
mod routing;
mod shard;
mod source;
mod staged;
mod staged_shard;
mod train;

pub use crate::graph::AlphaMode;
pub use crate::route::RoutingParams;
pub use error::BuildError;
pub use extsort::SpillReport;
pub use layout::GraphReport;
pub use params::{
    BlockInput, BlockParams, BuildParams, ClusterParams, CrossLinkParams, PqBuildParams,
    SpillParams,
};
pub use pipeline::{BuildObserver, BuildSummary, Silent, StageTime, build_index, peak_rss_bytes};
pub use refine::{RefineInputs, RefineParams, write_refinement};
pub use shard::{
    ShardPlan, ShardSummary, build_shards, plan_shards, publish_shards, shard_dir, write_shard,
};
pub use staged::{AssignSummary, TrainSummary, stage_assign, stage_train};
pub use staged_shard::{stage_publish, stage_shard};

// The build's stages, run one by one: not part of the API (`build_index` is), public only for
// examples/route_coverage.rs and tests/build_index.rs.
#[doc(hidden)]
pub use crate::route::QueryRouting;
#[doc(hidden)]
pub use assign::{AssignOutputs, Assignment, RecordIds, assign};
#[doc(hidden)]
pub use routing::train_routing;
#[doc(hidden)]
pub use source::BaseSource;
#[doc(hidden)]
pub use train::{Trained, normalize_rows, scan_base, train};

pub(crate) use hints::{answers_to_records, exact_answers};
