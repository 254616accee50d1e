//! Exact nearest neighbours by brute force (ground truth), and recall with fair ties.
