//! Crash-safe publication of an index directory (DESIGN §6, `docs/FORMAT.md`, "Publishing").
//!
//! 1. [`IndexDirWriter::create`] makes `<out>.tmp-<pid>` beside `<out>` (same file system).
//! 2. The builder writes every file inside it ([`IndexDirWriter::path`]); each writer fsyncs
//!    its file.
//! 3. [`IndexDirWriter::publish`] writes `manifest.m3` last and fsyncs it and the temporary
//!    directory; if `<out>` exists it is renamed to `<out>.old-<pid>`; the temporary directory
//!    is renamed to `<out>`; the parent is fsynced; the old index is removed.
//!
//! What a crash leaves, by the step it interrupts:
//! - during 1–3 before the first rename: `<out>` is untouched (the previous index, or nothing);
//!   a stale `<out>.tmp-<pid>` without (or with) a manifest is garbage, never opened as `<out>`;
//! - between the two renames: no index at `<out>`; the previous one is complete at
//!   `<out>.old-<pid>`, and [`recover`] moves it back;
//! - after the second rename: the new index is at `<out>`, possibly with a leftover
//!   `<out>.old-<pid>` that [`recover`] removes.
//!
//! Dropping an [`IndexDirWriter`] without publishing removes the temporary directory.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::FormatError;
use super::file::FileEntry;
use super::manifest::Manifest;
use super::verify::{MANIFEST_FILE, open_check};

/// A temporary index directory that becomes `<out>` on [`IndexDirWriter::publish`].
#[derive(Debug)]
pub struct IndexDirWriter {
    target: PathBuf,
    tmp: PathBuf,
    published: bool,
}

fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let mut name: OsString = target.as_os_str().to_owned();
    name.push(format!(".{suffix}-{}", std::process::id()));
    PathBuf::from(name)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn sync_dir(dir: &Path) -> Result<(), FormatError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FormatError::io(dir, e))
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), FormatError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FormatError::io(dir, e)),
        _ => Ok(()),
    }
}

impl IndexDirWriter {
    /// Creates the empty temporary directory `<target>.tmp-<pid>` (replacing a stale one of
    /// this process id).
    pub fn create(target: &Path) -> Result<Self, FormatError> {
        let tmp = sibling(target, "tmp");
        remove_dir_if_exists(&tmp)?;
        std::fs::create_dir(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
        Ok(Self {
            target: target.to_path_buf(),
            tmp,
            published: false,
        })
    }

    /// The temporary directory files are written into.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Path of file `name` inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.join(name)
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Writes the manifest (listing `manifest.files`) last, then moves the directory into
    /// place as described in the module doc. Returns the manifest's own entry.
    pub fn publish(mut self, manifest: &Manifest) -> Result<FileEntry, FormatError> {
        let entry = self.write_manifest(manifest)?;
        self.rename_into_place()?;
        Ok(entry)
    }

    /// Steps 2–3 up to and including the fsync of the manifest and the temporary directory,
    /// but no rename. Exposed so tests can simulate a crash just before publication.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<FileEntry, FormatError> {
        let entry = manifest.write(&self.path(MANIFEST_FILE))?;
        sync_dir(&self.tmp)?;
        Ok(entry)
    }

    fn rename_into_place(&mut self) -> Result<(), FormatError> {
        let parent = parent_of(&self.target).to_path_buf();
        let old = sibling(&self.target, "old");
        let had_old = self.target.exists();
        if had_old {
            remove_dir_if_exists(&old)?;
            std::fs::rename(&self.target, &old).map_err(|e| FormatError::io(&self.target, e))?;
        }
        if let Err(e) = std::fs::rename(&self.tmp, &self.target) {
            if had_old {
                // Best effort: put the previous index back.
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(FormatError::io(&self.target, e));
        }
        self.published = true;
        sync_dir(&parent)?;
        if had_old {
            remove_dir_if_exists(&old)?;
            sync_dir(&parent)?;
        }
        Ok(())
    }
}

impl Drop for IndexDirWriter {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: the temporary directory is garbage; `<out>` was never touched.
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// Repairs what a crashed publication of `target` left: if `target` is missing and a complete
/// `<target>.old-<pid>` exists (any pid), it is moved back; leftover `.old-*` directories
/// beside a complete `target` are removed. `.tmp-*` directories are left alone (another
/// process may be building). Returns whether an index was restored.
pub fn recover(target: &Path) -> Result<bool, FormatError> {
    let parent = parent_of(target);
    let Some(base) = target.file_name().and_then(|n| n.to_str()) else {
        return Ok(false);
    };
    let prefix = format!("{base}.old-");
    let mut olds: Vec<PathBuf> = std::fs::read_dir(parent)
        .map_err(|e| FormatError::io(parent, e))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .collect();
    olds.sort();
    let mut restored = false;
    if !target.exists()
        && let Some(i) = olds.iter().position(|o| open_check(o).is_ok())
    {
        let old = olds.remove(i);
        std::fs::rename(&old, target).map_err(|e| FormatError::io(target, e))?;
        sync_dir(parent)?;
        restored = true;
    }
    if open_check(target).is_ok() {
        for old in olds {
            remove_dir_if_exists(&old)?;
        }
    }
    Ok(restored)
}

/// Updates an index published at `dir` in place, crash-safely: writes each of `files`
/// (name, bytes) and fsyncs it, lets `edit` change the index parameters, then writes the new
/// manifest (listing the files, replacing entries of the same name) to `manifest.m3.new`,
/// fsyncs it, renames it over `manifest.m3` and fsyncs the directory. A crash leaves either
/// the old manifest (and possibly unlisted new files, which readers ignore) or the new one.
/// Used by calibration (`m3 calibrate`), which stores its choice in the manifest.
pub fn update_published(
    dir: &Path,
    files: &[(&str, &[u8])],
    edit: impl FnOnce(&mut super::IndexMeta),
) -> Result<Manifest, FormatError> {
    let mut manifest = open_check(dir)?;
    for &(name, bytes) in files {
        if name == MANIFEST_FILE {
            return Err(FormatError::invalid(
                "cannot replace the manifest as a file",
            ));
        }
        let entry = super::file::write_whole_file(&dir.join(name), bytes)?;
        manifest.files.retain(|f| f.name_str() != Some(name));
        manifest.files.push(entry);
    }
    edit(&mut manifest.meta);
    let new = dir.join(format!("{MANIFEST_FILE}.new"));
    manifest.write(&new)?;
    std::fs::rename(&new, dir.join(MANIFEST_FILE)).map_err(|e| FormatError::io(&new, e))?;
    sync_dir(dir)?;
    Ok(manifest)
}
