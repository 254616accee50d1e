//! [`LiveIndex`]: the latest committed generation of an index, swapped under running searchers
//! (`docs/UPDATES.md`, "Visibility"). A query takes one generation ([`LiveIndex::current`], an
//! `Arc<Index>`) when it starts and holds it until it ends: it sees every commit made before
//! that generation was installed and none after, whatever a writer does meanwhile.
//! [`LiveIndex::refresh`] installs the latest committed generation, built from the one before
//! by applying only the batches committed since (their inserts are read from `delta.m3` and
//! coded; nothing else is reloaded). A generation's files stay readable as long as it is held:
//! it keeps its own open descriptors of `data.m3` and `delta.m3`, so a file replaced or
//! removed on disk (a compaction) is only freed when the last query holding it ends.

use std::sync::{Arc, Mutex, RwLock};

use super::SearchError;
use super::index::Index;
use crate::io::{IoBackend, ReaderOptions};

/// The latest generation of an index, shared by searcher threads (module doc).
#[derive(Debug)]
pub struct LiveIndex {
    /// Taken only to clone or replace the pointer, never held across a query.
    current: RwLock<Arc<Index>>,
    /// Serialises refreshes: each builds on the generation the one before installed.
    refreshing: Mutex<()>,
}

impl LiveIndex {
    /// Shares `index` (its generation as opened) as the current generation.
    pub fn new(index: Index) -> Self {
        Self {
            current: RwLock::new(Arc::new(index)),
            refreshing: Mutex::new(()),
        }
    }

    /// Shares an index already shared by `Arc` as the current generation.
    pub fn from_arc(index: Arc<Index>) -> Self {
        Self {
            current: RwLock::new(index),
            refreshing: Mutex::new(()),
        }
    }

    /// Opens the index in `dir` ([`Index::open`]) at its latest committed generation.
    pub fn open(
        dir: &std::path::Path,
        backend: IoBackend,
        options: &ReaderOptions,
    ) -> Result<Self, SearchError> {
        Ok(Self::new(Index::open(dir, backend, options)?))
    }

    /// The current generation: hold it for the whole of a query (or of several queries that
    /// must agree with one another).
    pub fn current(&self) -> Arc<Index> {
        // A poisoned lock only means a thread panicked while cloning or replacing the
        // pointer, which cannot leave it half-written.
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The generation (commits replayed) of [`LiveIndex::current`].
    pub fn generation(&self) -> u64 {
        self.current().live_info().generation
    }

    /// Installs the latest committed generation, if it is newer than the current one, and
    /// returns the generation current afterwards. Queries already running keep theirs. On an
    /// error the current generation stays.
    pub fn refresh(&self) -> Result<u64, SearchError> {
        let _one = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let now = self.current();
        match super::live::advance(&now)? {
            None => Ok(now.live_info().generation),
            Some(next) => {
                let generation = next.live_info().generation;
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
                Ok(generation)
            }
        }
    }
}
