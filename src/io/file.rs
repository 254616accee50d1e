//! Opening an index data file read-only, with O_DIRECT where the file system allows it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use super::{AlignedBuf, IoError};

/// A data file opened for reading.
#[derive(Debug)]
pub(crate) struct DataFile {
    pub file: File,
    /// Opened with O_DIRECT, and a first aligned read worked.
    pub direct: bool,
    pub len_bytes: u64,
}

/// Opens `path` read-only. With `want_direct`, tries O_DIRECT first and falls back to buffered
/// reads when the open or a probe read of the first sector fails with EINVAL (tmpfs refuses
/// O_DIRECT at open; some file systems accept the flag and refuse the reads).
pub(crate) fn open_data_file(path: &Path, want_direct: bool) -> Result<DataFile, IoError> {
    open_data_file_with(path, want_direct, |p| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(p)
    })
}

/// [`open_data_file`] with the O_DIRECT open as a parameter, so tests can make it refuse.
fn open_data_file_with(
    path: &Path,
    want_direct: bool,
    open_direct: impl FnOnce(&Path) -> std::io::Result<File>,
) -> Result<DataFile, IoError> {
    let open_err = |source| IoError::Open {
        path: path.to_path_buf(),
        source,
    };
    if want_direct {
        match open_direct(path) {
            Ok(file) => {
                let len_bytes = file.metadata().map_err(open_err)?.len();
                if direct_read_works(&file, len_bytes).map_err(|source| IoError::Read {
                    path: path.to_path_buf(),
                    offset: 0,
                    len: super::SECTOR_BYTES as u64,
                    source,
                })? {
                    return Ok(DataFile {
                        file,
                        direct: true,
                        len_bytes,
                    });
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(open_err(e)),
        }
    }
    let file = File::open(path).map_err(open_err)?;
    let len_bytes = file.metadata().map_err(open_err)?.len();
    Ok(DataFile {
        file,
        direct: false,
        len_bytes,
    })
}

/// Reads the first sector with O_DIRECT: `Ok(false)` when refused with EINVAL.
fn direct_read_works(file: &File, len_bytes: u64) -> std::io::Result<bool> {
    if len_bytes == 0 {
        return Ok(true);
    }
    let mut buf = AlignedBuf::with_sectors(1);
    loop {
        match file.read_at(&mut buf, 0) {
            Ok(_) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_o_direct_refused_with_einval_falls_back_to_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 5000]).unwrap();
        let refused = open_data_file_with(&path, true, |_| {
            Err(std::io::Error::from_raw_os_error(libc::EINVAL))
        })
        .unwrap();
        assert!(!refused.direct);
        assert_eq!(refused.len_bytes, 5000);
        let mut buf = [0u8; 10];
        refused.file.read_at(&mut buf, 4990).unwrap();
        assert_eq!(buf, [7u8; 10]);
        // Other errors are open errors naming the file.
        let e = open_data_file_with(&path, true, |_| {
            Err(std::io::Error::from_raw_os_error(libc::EACCES))
        })
        .unwrap_err();
        assert!(
            matches!(e, IoError::Open { path: ref p, .. } if *p == path),
            "{e:?}"
        );
        // Not asked for: buffered.
        assert!(!open_data_file(&path, false).unwrap().direct);
    }
}
