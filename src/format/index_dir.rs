//! What may be in an index directory, and what a directory on disk holds: the test that
//! decides whether publishing may replace a directory and whether recovery may remove one
//! (`docs/FORMAT.md`, "Publishing").
//!
//! A directory is *an index* when its `manifest.m3` starts with the manifest magic and every
//! entry is a regular file whose name an index uses (the names below, or a name its manifest
//! lists). Anything else in it (a sub-directory, a symbolic link, `keep.txt`) makes it
//! *foreign*: never replaced, never removed.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::FormatError;
use super::files::{INDEX_DIR_FILES, MANIFEST_FILE};
use super::manifest::{MANIFEST_KIND, Manifest};

/// What is at a path, as far as publishing and recovery care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirContents {
    /// Nothing (not even a dangling symbolic link).
    Missing,
    /// Something other than a directory: `what` is "a file", "a symbolic link", ….
    NotADirectory { what: &'static str },
    /// An empty directory.
    Empty,
    /// A manifest with the manifest magic, and only index files.
    Index,
    /// Only index files but no `manifest.m3`: a build that never finished, or an index whose
    /// removal was interrupted.
    IndexFilesOnly,
    /// Holds `entry`, which no index holds (or a `manifest.m3` without the manifest magic).
    Foreign { entry: PathBuf },
}

/// Classifies what is at `dir` (see [`DirContents`]); symbolic links are not followed.
pub fn dir_contents(dir: &Path) -> Result<DirContents, FormatError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirContents::Missing),
        Err(e) => return Err(FormatError::io(dir, e)),
    };
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Ok(DirContents::NotADirectory {
            what: "a symbolic link",
        });
    }
    if ft.is_file() {
        return Ok(DirContents::NotADirectory { what: "a file" });
    }
    if !ft.is_dir() {
        return Ok(DirContents::NotADirectory {
            what: "not a directory (a device, socket or pipe)",
        });
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| FormatError::io(dir, e))? {
        let e = e.map_err(|e| FormatError::io(dir, e))?;
        let is_file = e
            .file_type()
            .map_err(|err| FormatError::io(e.path(), err))?;
        if !is_file.is_file() {
            return Ok(DirContents::Foreign { entry: e.path() });
        }
        match e.file_name().into_string() {
            Ok(n) => names.push(n),
            Err(_) => return Ok(DirContents::Foreign { entry: e.path() }),
        }
    }
    if names.is_empty() {
        return Ok(DirContents::Empty);
    }
    let manifest = dir.join(MANIFEST_FILE);
    let has_manifest = names.iter().any(|n| n == MANIFEST_FILE);
    if has_manifest && !has_manifest_magic(&manifest)? {
        return Ok(DirContents::Foreign { entry: manifest });
    }
    // A newer minor version may list files this build does not know by name.
    let listed: Vec<String> = if has_manifest {
        Manifest::read(&manifest).map_or_else(
            |_| Vec::new(),
            |m| {
                m.files
                    .iter()
                    .filter_map(|f| f.name_str().map(str::to_owned))
                    .collect()
            },
        )
    } else {
        Vec::new()
    };
    if let Some(n) = names
        .iter()
        .find(|n| !INDEX_DIR_FILES.contains(&n.as_str()) && !listed.contains(n))
    {
        return Ok(DirContents::Foreign { entry: dir.join(n) });
    }
    Ok(if has_manifest {
        DirContents::Index
    } else {
        DirContents::IndexFilesOnly
    })
}

fn has_manifest_magic(path: &Path) -> Result<bool, FormatError> {
    let mut magic = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(|e| FormatError::io(path, e))?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(magic == MANIFEST_KIND.magic),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(FormatError::io(path, e)),
    }
}

/// `target` as `parent/name` with a plain last component (`idx/` becomes `idx`), so that
/// siblings (`idx.tmp-<pid>`) are beside it, never inside it. Refuses `.`, `..` and `/`.
pub fn normalize_target(target: &Path) -> Result<PathBuf, FormatError> {
    match target.components().next_back() {
        Some(std::path::Component::Normal(name)) => Ok(match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.join(name),
            _ => PathBuf::from(name),
        }),
        _ => Err(FormatError::Refused {
            path: target.to_path_buf(),
            why: "an index directory needs a name (not `.`, `..` or `/`)".into(),
        }),
    }
}

/// The directory holding `path` (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
