//! Building an index (DESIGN §2): train → query routing → assign → neighbour lists and
//! layout → publish. The base is streamed; it is never held whole in RAM.

mod assign;
mod error;
mod extsort;
mod hints;
mod layout;
mod params;
mod pipeline;
mod routing;
mod source;
mod train;

pub use assign::{AssignOutputs, Assignment, RecordIds, assign};
pub use error::BuildError;
pub use extsort::{RecordSorter, SortedRecord, SpillReport};
pub use hints::{answers_to_records, exact_answers};
pub use layout::{GraphInputs, GraphReport, estimate_lid_stats, write_graphs, write_vectors};
pub use params::{
    BlockInput, BlockParams, BuildParams, ClusterParams, CrossLinkParams, PqBuildParams,
    RoutingParams, SpillParams,
};
pub use pipeline::{BuildObserver, BuildSummary, Silent, StageTime, build_index, peak_rss_bytes};
pub use routing::{QueryRouting, train_routing};
pub use source::{BaseSource, block_pq_bounds};
pub use train::{Trained, normalize_rows, scan_base, train};
