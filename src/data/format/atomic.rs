//! Atomic file replacement: write `<target>.partial`, fsync, rename over the target, fsync the
//! directory. Dropping a [`PartialFile`] that was not committed removes the partial file, so an
//! error never leaves a half-written file under the target name or destroys an existing one.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::data::DataError;

#[derive(Debug)]
pub(crate) struct PartialFile {
    target: PathBuf,
    partial: PathBuf,
    /// `None` once committed.
    file: Option<File>,
}

impl PartialFile {
    /// Creates (or truncates a stale) `<target>.partial`. The target itself is not touched.
    pub(crate) fn create(target: &Path) -> Result<Self, DataError> {
        let mut name: OsString = target.as_os_str().to_owned();
        name.push(".partial");
        let partial = PathBuf::from(name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(|e| DataError::io(&partial, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            partial,
            file: Some(file),
        })
    }

    pub(crate) fn target(&self) -> &Path {
        &self.target
    }

    pub(crate) fn partial(&self) -> &Path {
        &self.partial
    }

    /// One positioned write of all of `buf` at `offset`.
    pub(crate) fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DataError> {
        let file = self
            .file
            .as_ref()
            .expect("a PartialFile is only written before commit");
        file.write_all_at(buf, offset)
            .map_err(|e| DataError::io(&self.partial, e))
    }

    /// fsyncs the data, renames the partial file over the target and fsyncs the directory.
    pub(crate) fn commit(mut self) -> Result<(), DataError> {
        let file = self.file.as_ref().expect("commit runs once");
        file.sync_all()
            .map_err(|e| DataError::io(&self.partial, e))?;
        std::fs::rename(&self.partial, &self.target).map_err(|e| DataError::io(&self.target, e))?;
        // Renamed: from here on, drop must not remove anything.
        self.file = None;
        let dir = match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| DataError::io(dir, e))
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file);
            // Best effort: the partial file is garbage, and the target was never touched.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
