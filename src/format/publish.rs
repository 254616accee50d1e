//! Crash-safe publication of an index directory (DESIGN §6, `docs/FORMAT.md`, "Publishing").
//!
//! 0. [`check_target`] refuses, before any work, an `<out>` that is not replaceable: a file,
//!    a symbolic link, a directory holding anything but an index (see
//!    [`super::index_dir`]), a missing parent, or a path holding one of the build's inputs.
//! 1. [`IndexDirWriter::create`] makes `<out>.tmp-<pid>` beside `<out>` (same file system).
//! 2. The builder writes every file inside it ([`IndexDirWriter::path`]); each writer fsyncs
//!    its file.
//! 3. [`IndexDirWriter::publish`] writes `manifest.m3` last and fsyncs it and the temporary
//!    directory;
//! 4. checks `<out>` again and, if it exists, renames it to `<out>.old-<pid>`;
//! 5. renames the temporary directory to `<out>` and fsyncs the parent;
//! 6. removes the old index and fsyncs the parent.
//!
//! A kill at any point leaves a state that [`super::recover_index_dir`] turns into the
//! complete old index or the complete new one at `<out>` (the table is in `docs/FORMAT.md`).
//! Dropping an [`IndexDirWriter`] without publishing removes the temporary directory.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::FormatError;
use super::file::FileEntry;
use super::files::{MANIFEST_FILE, MANIFEST_UPDATE_FILE};
use super::index_dir::{DirContents, dir_contents, normalize_target, parent_of};
use super::manifest::Manifest;
use super::verify::open_check;

/// A temporary index directory that becomes `<out>` on [`IndexDirWriter::publish`].
#[derive(Debug)]
pub struct IndexDirWriter {
    target: PathBuf,
    tmp: PathBuf,
    pid: u32,
    published: bool,
}

/// The steps of [`IndexDirWriter::publish`] after which a test can stop it, leaving the
/// directories exactly as a kill at that point would (`publish_then_crash`).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PublishStep {
    /// Step 3: `manifest.m3` written and fsynced in the temporary directory.
    ManifestWritten,
    /// Step 4: the previous `<out>` renamed to `<out>.old-<pid>` (no-op without one).
    OldMovedAside,
    /// Step 5: the temporary directory renamed to `<out>`.
    NewInPlace,
    /// Step 6: the old index removed: publication complete.
    OldRemoved,
}

/// `<target>.<kind>-<pid>`: a sibling of `target` (which must be normalised).
pub(crate) fn sibling(target: &Path, kind: &str, pid: u32) -> PathBuf {
    let mut name: OsString = target.as_os_str().to_owned();
    name.push(format!(".{kind}-{pid}"));
    PathBuf::from(name)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), FormatError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| FormatError::io(dir, e))
}

pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<(), FormatError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FormatError::io(dir, e)),
        _ => Ok(()),
    }
}

/// What [`check_target`] found at the output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// Nothing there: the index will be created.
    Missing,
    /// An empty directory: it will be replaced.
    Empty,
    /// An M³ index: it will be replaced atomically.
    Index,
}

fn refused(path: &Path, why: impl Into<String>) -> FormatError {
    FormatError::Refused {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Checks, before any work, that an index may be published at `target`: its parent is an
/// existing directory; `target` is absent, an empty directory or an M³ index (nothing else:
/// a file, a symbolic link, a directory with any other entry are refused, naming the entry);
/// and no path of `inputs` is `target` or inside it (publishing would delete it). Inputs that
/// do not exist are not checked here (reading them reports that).
pub fn check_target(target: &Path, inputs: &[&Path]) -> Result<TargetState, FormatError> {
    let target = normalize_target(target)?;
    let parent = parent_of(&target);
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(refused(
                &target,
                format!("{} is not a directory", parent.display()),
            ));
        }
        Err(e) => {
            return Err(refused(
                &target,
                format!("its directory {}: {e}", parent.display()),
            ));
        }
    }
    let resolved = std::fs::canonicalize(parent)
        .map_err(|e| FormatError::io(parent, e))?
        .join(target.file_name().expect("normalised"));
    for input in inputs {
        if let Ok(c) = std::fs::canonicalize(input)
            && c.starts_with(&resolved)
        {
            let why = if c == resolved {
                format!(
                    "it is the input {}; publishing would replace it",
                    input.display()
                )
            } else {
                format!(
                    "it holds the input {}; publishing would delete it",
                    input.display()
                )
            };
            return Err(refused(&target, why));
        }
    }
    match dir_contents(&target)? {
        DirContents::Missing => Ok(TargetState::Missing),
        DirContents::Empty => Ok(TargetState::Empty),
        DirContents::Index => Ok(TargetState::Index),
        DirContents::NotADirectory { what } => Err(refused(
            &target,
            format!("it is {what}; only a directory that is an M³ index (or empty) is replaced"),
        )),
        DirContents::IndexFilesOnly => Err(refused(
            &target,
            "it holds index files but no manifest (not a complete index); remove it first",
        )),
        DirContents::Foreign { entry } => Err(refused(
            &target,
            format!(
                "it holds {}, which is not part of an M³ index; only a directory that is an \
                 index (or empty) is replaced",
                entry.display()
            ),
        )),
    }
}

impl IndexDirWriter {
    /// Checks `target` ([`check_target`], no inputs) and creates the empty temporary
    /// directory `<target>.tmp-<pid>` (replacing a stale one of this process id).
    pub fn create(target: &Path) -> Result<Self, FormatError> {
        Self::create_for_pid(target, std::process::id())
    }

    /// [`IndexDirWriter::create`] naming the temporaries after `pid`: lets tests leave the
    /// directories of a process that is gone.
    #[doc(hidden)]
    pub fn create_for_pid(target: &Path, pid: u32) -> Result<Self, FormatError> {
        check_target(target, &[])?;
        let target = normalize_target(target)?;
        let tmp = sibling(&target, "tmp", pid);
        // Two writers of one target in one process would share the temporary directory (it
        // is named after the process): the second would remove the first's files.
        if !writing().insert(tmp.clone()) {
            return Err(refused(
                &target,
                "another build or merge of this index is running in this process",
            ));
        }
        let claimed = Claim(tmp.clone());
        match dir_contents(&tmp)? {
            DirContents::Missing => {}
            DirContents::Empty | DirContents::Index | DirContents::IndexFilesOnly => {
                remove_dir_if_exists(&tmp)?
            }
            _ => {
                return Err(refused(
                    &tmp,
                    "the build's temporary directory is taken by something that is not an index",
                ));
            }
        }
        std::fs::create_dir(&tmp).map_err(|e| FormatError::io(&tmp, e))?;
        std::mem::forget(claimed); // released by the writer's drop from now on
        Ok(Self {
            target,
            tmp,
            pid,
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
        self.run(manifest, PublishStep::OldRemoved)
    }

    /// Runs the publication up to and including `last`, then stops as a kill would: nothing
    /// is cleaned up. For the recovery tests.
    #[doc(hidden)]
    pub fn publish_then_crash(
        mut self,
        manifest: &Manifest,
        last: PublishStep,
    ) -> Result<FileEntry, FormatError> {
        let r = self.run(manifest, last);
        self.published = true;
        r
    }

    /// Stops as a kill before publication would: the temporary directory stays. For the
    /// recovery tests.
    #[doc(hidden)]
    pub fn crash(mut self) {
        self.published = true;
    }

    /// Steps 2–3 up to and including the fsync of the manifest and the temporary directory,
    /// but no rename.
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<FileEntry, FormatError> {
        let entry = manifest.write(&self.path(MANIFEST_FILE))?;
        sync_dir(&self.tmp)?;
        Ok(entry)
    }

    fn run(&mut self, manifest: &Manifest, last: PublishStep) -> Result<FileEntry, FormatError> {
        let entry = self.write_manifest(manifest)?;
        if last == PublishStep::ManifestWritten {
            return Ok(entry);
        }
        // The target may have changed during the build: check it again before touching it.
        let had_old = check_target(&self.target, &[])? != TargetState::Missing;
        let parent = parent_of(&self.target).to_path_buf();
        let old = sibling(&self.target, "old", self.pid);
        if had_old {
            remove_dir_if_exists(&old)?;
            std::fs::rename(&self.target, &old).map_err(|e| FormatError::io(&self.target, e))?;
        }
        if last == PublishStep::OldMovedAside {
            return Ok(entry);
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
        if last == PublishStep::NewInPlace {
            return Ok(entry);
        }
        if had_old {
            remove_dir_if_exists(&old)?;
            sync_dir(&parent)?;
        }
        Ok(entry)
    }
}

impl Drop for IndexDirWriter {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: the temporary directory is garbage; `<out>` was never touched.
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
        writing().remove(&self.tmp);
    }
}

/// The temporary directories of this process's live [`IndexDirWriter`]s.
fn writing() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<PathBuf>> {
    static WRITING: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    WRITING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A temporary directory claimed in [`writing`] until the writer owning it exists.
struct Claim(PathBuf);

impl Drop for Claim {
    fn drop(&mut self) {
        writing().remove(&self.0);
    }
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
    let new = dir.join(MANIFEST_UPDATE_FILE);
    manifest.write(&new)?;
    std::fs::rename(&new, dir.join(MANIFEST_FILE)).map_err(|e| FormatError::io(&new, e))?;
    sync_dir(dir)?;
    Ok(manifest)
}
