//! Recovery after a killed build or publication: [`recover_index_dir`] turns whatever a kill
//! left beside an index path into the complete old index or the complete new one, and removes
//! the temporaries of processes that are gone. The rule (state → action) is written once, in
//! `docs/FORMAT.md`, "Recovery".
//!
//! The publication of [`super::publish`] names its temporaries after the process:
//! `<out>.tmp-<pid>` (the build), `<out>.sort-<pid>` (the build's sort runs) and
//! `<out>.old-<pid>` (the previous index, between steps 4 and 6). A process is gone when
//! `/proc/<pid>` does not exist; temporaries of a live process (a build running now) are never
//! touched. Only directories that hold nothing but index files (or sort runs) are removed;
//! anything else is left and reported in [`RecoveryReport::kept`].

use std::path::{Path, PathBuf};

use super::FormatError;
use super::index_dir::{DirContents, dir_contents, normalize_target, parent_of};
use super::publish::{remove_dir_if_exists, sibling, sync_dir};
use super::verify::open_check;

/// A temporary a publication leaves beside `<out>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempKind {
    /// `<out>.tmp-<pid>`: the directory a build writes.
    Tmp,
    /// `<out>.old-<pid>`: the previous index, moved aside by a publication.
    Old,
    /// `<out>.sort-<pid>`: the build's external-sort runs.
    Sort,
    /// `<out>.compact-<pid>`: the live set a compaction exported (`live.fbin`,
    /// `live.u64bin`).
    Compact,
}

impl TempKind {
    fn tag(self) -> &'static str {
        match self {
            TempKind::Tmp => "tmp",
            TempKind::Old => "old",
            TempKind::Sort => "sort",
            TempKind::Compact => "compact",
        }
    }
}

/// One temporary beside `<out>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Temporary {
    /// Its path.
    pub path: PathBuf,
    /// Which kind of temporary.
    pub kind: TempKind,
    /// The process that made it (from its name).
    pub pid: u32,
}

/// What recovery did to `<out>` itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// A killed publication had moved the old index aside and finished the new one: the new
    /// one (`from`, a `.tmp-`) was moved into place.
    RolledForward {
        /// The temporary directory moved into place.
        from: PathBuf,
    },
    /// A killed publication had moved the old index aside without a complete new one: the old
    /// one (`from`, an `.old-`) was moved back.
    RolledBack {
        /// The old index moved back.
        from: PathBuf,
    },
}

/// What [`recover_index_dir`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// `<out>` was missing and was restored.
    pub restored: Option<Restored>,
    /// Temporaries of dead processes that were removed.
    pub removed: Vec<PathBuf>,
    /// Temporaries of live processes (a build or publication running now): left alone.
    pub in_progress: Vec<Temporary>,
    /// Temporaries of dead processes that were left, with the reason (they hold something
    /// other than index files, or removing them failed).
    pub kept: Vec<(PathBuf, String)>,
}

impl RecoveryReport {
    /// Whether recovery found nothing to do or report.
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }
}

/// Whether process `pid` may still be running: true unless `/proc` shows it is gone. This
/// process counts as running.
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() || !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The temporaries beside `target` (normalised), in name order.
pub fn temporaries(target: &Path) -> Result<Vec<Temporary>, FormatError> {
    let parent = parent_of(target);
    let Some(base) = target.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{base}.");
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FormatError::io(parent, e)),
    };
    let mut found = Vec::new();
    for e in entries {
        let e = e.map_err(|e| FormatError::io(parent, e))?;
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((tag, pid)) = rest.split_once('-') else {
            continue;
        };
        let kind = match tag {
            "tmp" => TempKind::Tmp,
            "old" => TempKind::Old,
            "sort" => TempKind::Sort,
            "compact" => TempKind::Compact,
            _ => continue,
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        found.push(Temporary {
            path: sibling(target, kind.tag(), pid),
            kind,
            pid,
        });
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Finishes or rolls back an interrupted publication of `target` and removes the
/// temporaries of dead processes, as the table in the module doc says. Safe to run at any
/// time, by any number of processes: it never touches a live process's temporaries, never
/// replaces an existing `target`, and never removes a directory holding anything but index
/// files. Errors only when `target` is missing and putting an index back failed, or when the
/// directory holding `target` cannot be read; a temporary it could not remove is reported in
/// [`RecoveryReport::kept`].
pub fn recover_index_dir(target: &Path) -> Result<RecoveryReport, FormatError> {
    // `.` or `..` (an existing directory) by its real name; `/` has no siblings.
    let target = match normalize_target(target) {
        Ok(t) => t,
        Err(_) => match std::fs::canonicalize(target) {
            Ok(c) if c.file_name().is_some() => c,
            _ => return Ok(RecoveryReport::default()),
        },
    };
    let parent = parent_of(&target).to_path_buf();
    let mut report = RecoveryReport::default();
    let mut dead = Vec::new();
    for t in temporaries(&target)? {
        if process_alive(t.pid) {
            report.in_progress.push(t);
        } else {
            dead.push(t);
        }
    }
    if dead.is_empty() {
        return Ok(report);
    }
    if dir_contents(&target)? == DirContents::Missing {
        report.restored = restore(&target, &dead)?;
    }
    let target_is_index = dir_contents(&target)? == DirContents::Index;
    for t in &dead {
        if report.restored.as_ref().is_some_and(|r| match r {
            Restored::RolledForward { from } | Restored::RolledBack { from } => *from == t.path,
        }) {
            continue;
        }
        let removable = match t.kind {
            TempKind::Old if !target_is_index => Err(format!(
                "{} is not an index, so this may be the only copy",
                target.display()
            )),
            TempKind::Old | TempKind::Tmp => match dir_contents(&t.path) {
                Ok(DirContents::Missing) => continue,
                Ok(DirContents::Empty | DirContents::Index | DirContents::IndexFilesOnly) => Ok(()),
                Ok(DirContents::NotADirectory { what }) => Err(format!("it is {what}")),
                Ok(DirContents::Foreign { entry }) => {
                    Err(format!("it holds {}, not an index file", entry.display()))
                }
                Err(e) => Err(e.to_string()),
            },
            TempKind::Sort => sort_dir_only_runs(&t.path),
            TempKind::Compact => compact_dir_only_exports(&t.path),
        };
        match removable.and_then(|()| remove_dir_if_exists(&t.path).map_err(|e| e.to_string())) {
            Ok(()) => report.removed.push(t.path.clone()),
            Err(why) => report.kept.push((t.path.clone(), why)),
        }
    }
    if report.restored.is_some() || !report.removed.is_empty() {
        sync_dir(&parent)?;
    }
    Ok(report)
}

/// Puts an index back at the missing `target` from the dead temporaries, if a killed
/// publication had moved one aside.
fn restore(target: &Path, dead: &[Temporary]) -> Result<Option<Restored>, FormatError> {
    let complete =
        |p: &Path| dir_contents(p).is_ok_and(|c| c == DirContents::Index) && open_check(p).is_ok();
    let olds: Vec<&Temporary> = dead
        .iter()
        .filter(|t| t.kind == TempKind::Old && complete(&t.path))
        .collect();
    if olds.is_empty() {
        return Ok(None);
    }
    // Step 4 was done by the process that left `.old-P`: its `.tmp-P` is the new index when
    // complete (the manifest is written last, step 3).
    let forward = olds.iter().find_map(|o| {
        dead.iter()
            .find(|t| t.kind == TempKind::Tmp && t.pid == o.pid && complete(&t.path))
    });
    let (from, restored) = match forward {
        Some(t) => (
            t.path.clone(),
            Restored::RolledForward {
                from: t.path.clone(),
            },
        ),
        None => {
            let newest = olds
                .iter()
                .max_by_key(|o| std::fs::metadata(&o.path).and_then(|m| m.modified()).ok())
                .expect("not empty");
            (
                newest.path.clone(),
                Restored::RolledBack {
                    from: newest.path.clone(),
                },
            )
        }
    };
    match std::fs::rename(&from, target) {
        Ok(()) => Ok(Some(restored)),
        // Another process recovered it first.
        Err(_) if dir_contents(target)? == DirContents::Index => Ok(None),
        Err(e) => Err(FormatError::io(target, e)),
    }
}

/// `Ok` when `dir` holds only the build's sort runs (`run-*.zst`).
/// Whether `dir` holds only what a compaction exports (so removing it loses nothing).
fn compact_dir_only_exports(dir: &Path) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    for e in entries {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name();
        // The writers' partial files end in `.partial-<pid>` or similar: any `live.*`.
        let ours = name.to_str().is_some_and(|n| n.starts_with("live."));
        if !ours || !e.file_type().is_ok_and(|t| t.is_file()) {
            return Err(format!(
                "it holds {}, not an exported live set",
                e.path().display()
            ));
        }
    }
    Ok(())
}

fn sort_dir_only_runs(dir: &Path) -> Result<(), String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return Err(e.to_string()),
    };
    for e in entries {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name();
        let is_run = name
            .to_str()
            .is_some_and(|n| n.starts_with("run-") && n.ends_with(".zst"));
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if !is_run || !is_file {
            return Err(format!("it holds {}, not a sort run", e.path().display()));
        }
    }
    Ok(())
}
