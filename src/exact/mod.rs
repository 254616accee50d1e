//! Exact nearest neighbours by brute force (ground truth), and recall with fair ties.
//!
//! Useful for: ground-truth files (`m3 gt`), recall of any result table, small exhaustive
//! searches in tests. Not useful for: serving queries over large data (that is the index).

mod brute;
mod recall;

pub use crate::neighbor::Neighbor;
pub(crate) use crate::neighbor::TopK;
pub(crate) use brute::check_k;
pub use brute::{ExactParams, ExactSearch, exact_knn, exact_knn_file, to_ground_truth};
pub use recall::{Recall, TIE_REL_TOL, recall_at_k};
