//! Synthetic data sets, seeded and streamed to disk.
