//! What every small index file shares: the manifest entry describing a written file
//! ([`FileEntry`]), a writer that lays 8-byte-aligned sections after a header, a reader that
//! checks every section against the real file length *before* allocating, and the
//! `layout_table!` macro that feeds the `docs/FORMAT.md` consistency test.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytemuck::{Pod, Zeroable};

use super::FormatError;
use super::header::{
    COMMON_HEADER_BYTES, CommonHeader, FileKind, decode_header, encode_header_with_trailer,
};

/// Longest header a reader accepts (the manifest's is `136 + 48·file_count` bytes).
pub const MAX_HEADER_BYTES: u64 = 1 << 20;

/// `(field, offset, size)` rows of a struct's byte layout, as in `docs/FORMAT.md`.
pub type LayoutTable = Vec<(&'static str, usize, usize)>;

/// Length of [`FileEntry::name`].
pub const FILE_NAME_BYTES: usize = 32;

/// One file of an index as listed in the manifest: name, length and CRC32C of the whole file.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct FileEntry {
    /// UTF-8 file name inside the index directory, zero padded.
    pub name: [u8; FILE_NAME_BYTES],
    pub bytes: u64,
    pub crc32c: u32,
    pub reserved: u32,
}

const _: () = assert!(std::mem::size_of::<FileEntry>() == 48);

impl FileEntry {
    /// An entry for `name` (1–32 bytes of UTF-8, a plain file name).
    pub fn new(name: &str, bytes: u64, crc32c: u32) -> Result<Self, FormatError> {
        if !is_plain_name(name) {
            return Err(FormatError::invalid(format!(
                "bad index file name {name:?}"
            )));
        }
        let mut n = [0u8; FILE_NAME_BYTES];
        n[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Self {
            name: n,
            bytes,
            crc32c,
            reserved: 0,
        })
    }

    /// The file name, or `None` when the stored bytes are not a plain file name (not UTF-8,
    /// empty, non-zero after the first zero, or containing `/`, or `.`/`..`).
    pub fn name_str(&self) -> Option<&str> {
        let len = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(FILE_NAME_BYTES);
        if self.name[len..].iter().any(|&b| b != 0) {
            return None;
        }
        let s = std::str::from_utf8(&self.name[..len]).ok()?;
        is_plain_name(s).then_some(s)
    }

    pub fn layout_table() -> LayoutTable {
        crate::layout_table!(0, FileEntry, name, bytes, crc32c, reserved)
    }
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= FILE_NAME_BYTES && !s.contains(['/', '\0']) && s != "." && s != ".."
}

/// `(field, offset, size)` of each listed field of a Pod struct, offsets plus `base` (32 for a
/// kind-specific header, whose offsets `docs/FORMAT.md` gives from the file start).
#[macro_export]
#[doc(hidden)]
macro_rules! layout_table {
    ($base:expr, $ty:ty, $($field:ident),+ $(,)?) => {{
        let z = <$ty as ::bytemuck::Zeroable>::zeroed();
        vec![$((
            stringify!($field),
            $base + ::std::mem::offset_of!($ty, $field),
            ::std::mem::size_of_val(&z.$field),
        )),+]
    }};
}

pub(crate) fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

fn file_name(path: &Path) -> Result<&str, FormatError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| FormatError::invalid(format!("{}: no file name", path.display())))
}

/// Writes `bytes` to `path` (created or truncated), fsyncs it and returns its manifest entry.
pub(crate) fn write_whole_file(path: &Path, bytes: &[u8]) -> Result<FileEntry, FormatError> {
    let entry = FileEntry::new(file_name(path)?, bytes.len() as u64, crc32c::crc32c(bytes))?;
    let mut f = File::create(path).map_err(|e| FormatError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| FormatError::io(path, e))?;
    Ok(entry)
}

/// A listed file of an index, open for reading, with its manifest entry (length and
/// CRC32C). An open index keeps the files it reads after opening (`keys.m3`, `pq.m3`'s
/// errors) as `ListedFile`s, so a rebuild that replaces the directory cannot swap them.
#[derive(Debug)]
pub struct ListedFile {
    pub path: PathBuf,
    file: File,
    pub entry: FileEntry,
}

impl ListedFile {
    /// Opens the file of `entry` in `dir`.
    pub fn open(dir: &Path, entry: &FileEntry) -> Result<Self, FormatError> {
        let name = entry
            .name_str()
            .ok_or_else(|| FormatError::invalid("a manifest entry without a plain name"))?;
        let path = dir.join(name);
        let file = File::open(&path).map_err(|e| FormatError::io(&path, e))?;
        Ok(Self {
            path,
            file,
            entry: *entry,
        })
    }

    /// A reader of the file with its header checked (see [`SectionReader::open`]).
    pub(crate) fn reader<S: Pod>(
        &self,
        kind: &FileKind,
    ) -> Result<(SectionReader, S), FormatError> {
        let file = self
            .file
            .try_clone()
            .map_err(|e| FormatError::io(&self.path, e))?;
        SectionReader::open_file(&self.path, file, kind)
    }

    /// `parsed` (the result of parsing `r`, a reader of this file) once the file's length and
    /// CRC32C match the manifest. A checksum mismatch is reported in place of a parse error,
    /// which it explains.
    pub(crate) fn checked<T>(
        &self,
        r: &SectionReader,
        parsed: Result<T, FormatError>,
    ) -> Result<T, FormatError> {
        r.check_listed(&self.entry)?;
        parsed
    }
}

/// Builds a small file in memory: header space, then 8-byte-aligned sections.
pub(crate) struct SectionWriter {
    buf: Vec<u8>,
    header_bytes: usize,
}

impl SectionWriter {
    /// Reserves `header_bytes` (common + kind-specific + trailer) at the start.
    pub(crate) fn new(header_bytes: usize) -> Self {
        let mut buf = vec![0u8; header_bytes];
        buf.resize(align8(header_bytes as u64) as usize, 0);
        Self { buf, header_bytes }
    }

    /// Appends a section at the next 8-byte boundary and returns its offset.
    pub(crate) fn push<T: Pod>(&mut self, items: &[T]) -> u64 {
        self.buf.resize(align8(self.buf.len() as u64) as usize, 0);
        let offset = self.buf.len() as u64;
        self.buf.extend_from_slice(bytemuck::cast_slice(items));
        offset
    }

    /// Fills in the header and writes the file.
    pub(crate) fn finish<S: Pod>(
        mut self,
        path: &Path,
        kind: &FileKind,
        specific: &S,
        trailer: &[u8],
    ) -> Result<FileEntry, FormatError> {
        let header = encode_header_with_trailer(kind, self.buf.len() as u64, specific, trailer);
        assert_eq!(header.len(), self.header_bytes, "header size mismatch");
        self.buf[..header.len()].copy_from_slice(&header);
        write_whole_file(path, &self.buf)
    }
}

/// An opened index file whose header has been checked.
pub(crate) struct SectionReader {
    pub(crate) path: PathBuf,
    file: File,
    pub(crate) file_bytes: u64,
    pub(crate) common: CommonHeader,
    /// The whole header, `[0, header_bytes)`.
    pub(crate) header: Vec<u8>,
    /// `(offset, bytes, crc32c)` of every section read so far, for [`Self::check_listed`].
    read: RefCell<Vec<(u64, u64, u32)>>,
}

impl SectionReader {
    /// Opens `path`, reads and checks its header (magic, version, CRC, recorded length).
    pub(crate) fn open<S: Pod>(path: &Path, kind: &FileKind) -> Result<(Self, S), FormatError> {
        let file = OpenOptions::new()
            .read(true)
            .open(path)
            .map_err(|e| FormatError::io(path, e))?;
        Self::open_file(path, file, kind)
    }

    /// Like [`Self::open`] on an already open `file` (named `path` in errors): an index holds
    /// the files it reads later open, so that a rebuild in place cannot swap them.
    pub(crate) fn open_file<S: Pod>(
        path: &Path,
        file: File,
        kind: &FileKind,
    ) -> Result<(Self, S), FormatError> {
        let file_bytes = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
        let mut first = [0u8; COMMON_HEADER_BYTES];
        let n = (file_bytes.min(COMMON_HEADER_BYTES as u64)) as usize;
        file.read_exact_at(&mut first[..n], 0)
            .map_err(|e| FormatError::io(path, e))?;
        // Let decode_header report short files and bad magic/version first.
        let peek: CommonHeader = bytemuck::pod_read_unaligned(&first);
        let want = if n < COMMON_HEADER_BYTES || peek.magic != kind.magic {
            n as u64
        } else {
            (peek.header_bytes as u64)
                .min(file_bytes)
                .min(MAX_HEADER_BYTES)
        };
        let mut header = vec![0u8; want.max(n as u64) as usize];
        file.read_exact_at(&mut header, 0)
            .map_err(|e| FormatError::io(path, e))?;
        if peek.magic == kind.magic
            && n == COMMON_HEADER_BYTES
            && peek.header_bytes as u64 > MAX_HEADER_BYTES
        {
            return Err(FormatError::corrupt(
                path,
                12,
                format!("header_bytes {} is implausibly large", peek.header_bytes),
            ));
        }
        let (common, spec) = decode_header::<S>(path, kind, &header, file_bytes)?;
        let reader = Self {
            path: path.to_path_buf(),
            file,
            file_bytes,
            common,
            header,
            read: RefCell::new(Vec::new()),
        };
        Ok((reader, spec))
    }

    /// Checks the file against its manifest `entry`: the length, then the CRC32C of the whole
    /// file, reading every byte once: the CRCs of the sections already read are combined
    /// with those of the bytes between them (header, padding, sections not kept), read now.
    pub(crate) fn check_listed(&self, entry: &FileEntry) -> Result<(), FormatError> {
        check_listed_length(&self.path, entry, self.file_bytes)?;
        let mut read = self.read.borrow().clone();
        read.sort_unstable();
        let mut crc = 0u32;
        let mut pos = 0u64;
        for &(offset, bytes, section_crc) in &read {
            if offset < pos {
                // Overlapping sections (a writer never makes them): read it all again.
                crc = stream_crc(&self.file, &self.path, 0, self.file_bytes, 0)?;
                pos = self.file_bytes;
                break;
            }
            crc = stream_crc(&self.file, &self.path, pos, offset, crc)?;
            crc = crc32c::crc32c_combine(crc, section_crc, bytes as usize);
            pos = offset + bytes;
        }
        crc = stream_crc(&self.file, &self.path, pos, self.file_bytes, crc)?;
        if crc != entry.crc32c {
            return Err(FormatError::Checksum {
                path: self.path.clone(),
                what: "whole file".into(),
                stored: entry.crc32c,
                computed: crc,
            });
        }
        Ok(())
    }

    /// Checks that `count` items of `T` at `offset` lie inside the file (after the header,
    /// 8-byte aligned, overlapping no section read before) and returns the byte length.
    pub(crate) fn check_section<T: Pod>(
        &self,
        offset: u64,
        count: u64,
        what: &str,
    ) -> Result<usize, FormatError> {
        let len = self.check_bounds::<T>(offset, count, what)?;
        let end = offset + len as u64;
        if len > 0
            && self
                .read
                .borrow()
                .iter()
                .any(|&(o, n, _)| n > 0 && offset < o + n && o < end)
        {
            return Err(self.corrupt(offset, format!("{what}: overlaps another section")));
        }
        Ok(len)
    }

    fn check_bounds<T: Pod>(
        &self,
        offset: u64,
        count: u64,
        what: &str,
    ) -> Result<usize, FormatError> {
        let len = count
            .checked_mul(std::mem::size_of::<T>() as u64)
            .ok_or_else(|| self.corrupt(offset, format!("{what}: size overflows")))?;
        if !offset.is_multiple_of(8) || offset < self.common.header_bytes as u64 {
            return Err(self.corrupt(offset, format!("{what}: bad section offset {offset}")));
        }
        let end = offset
            .checked_add(len)
            .ok_or_else(|| self.corrupt(offset, format!("{what}: end overflows")))?;
        if end > self.file_bytes {
            return Err(FormatError::Truncated {
                path: self.path.clone(),
                expected_bytes: end,
                found_bytes: self.file_bytes,
            });
        }
        usize::try_from(len).map_err(|_| self.corrupt(offset, format!("{what}: too large")))
    }

    /// Reads `count` items of `T` at `offset`, after [`Self::check_section`].
    pub(crate) fn section<T: Pod>(
        &self,
        offset: u64,
        count: u64,
        what: &str,
    ) -> Result<Vec<T>, FormatError> {
        self.check_section::<T>(offset, count, what)?;
        let mut v = vec![T::zeroed(); count as usize];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut v);
        self.file
            .read_exact_at(bytes, offset)
            .map_err(|e| FormatError::io(&self.path, e))?;
        self.read
            .borrow_mut()
            .push((offset, bytes.len() as u64, crc32c::crc32c(bytes)));
        Ok(v)
    }

    pub(crate) fn corrupt(&self, offset: u64, what: impl Into<String>) -> FormatError {
        FormatError::corrupt(&self.path, offset, what)
    }
}

/// `a · b` as u64, or a `Corrupt` error naming `what`.
pub(crate) fn mul(r: &SectionReader, a: u64, b: u64, what: &str) -> Result<u64, FormatError> {
    a.checked_mul(b)
        .ok_or_else(|| r.corrupt(COMMON_HEADER_BYTES as u64, format!("{what} overflows")))
}

/// Refuses a file whose length is not the one its manifest `entry` lists.
pub(crate) fn check_listed_length(
    path: &Path,
    entry: &FileEntry,
    found_bytes: u64,
) -> Result<(), FormatError> {
    if found_bytes < entry.bytes {
        return Err(FormatError::Truncated {
            path: path.to_path_buf(),
            expected_bytes: entry.bytes,
            found_bytes,
        });
    }
    if found_bytes > entry.bytes {
        return Err(FormatError::corrupt(
            path,
            entry.bytes,
            format!(
                "the file has {found_bytes} bytes, the manifest lists {}",
                entry.bytes
            ),
        ));
    }
    Ok(())
}

/// `crc` extended by the bytes `[from, to)` of `file`, streamed in 1 MiB reads.
fn stream_crc(file: &File, path: &Path, from: u64, to: u64, crc: u32) -> Result<u32, FormatError> {
    let mut buf = vec![0u8; (to.saturating_sub(from)).min(1 << 20) as usize];
    let (mut pos, mut crc) = (from, crc);
    while pos < to {
        let n = ((to - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)
            .map_err(|e| FormatError::io(path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        pos += n as u64;
    }
    Ok(crc)
}

/// CRC32C of a whole file, streamed in 1 MiB reads.
pub fn file_crc32c(path: &Path) -> Result<(u64, u32), FormatError> {
    let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
    let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    Ok((len, stream_crc(&file, path, 0, len, 0)?))
}

/// Copies `bytes` (a multiple of `size_of::<T>()`, any alignment) into a `Vec<T>`.
pub(crate) fn pod_vec<T: Pod>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(size_of::<T>())
        .map(bytemuck::pod_read_unaligned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_plain_file_names() {
        let e = FileEntry::new("data.m3", 7, 9).unwrap();
        assert_eq!(e.name_str(), Some("data.m3"));
        assert_eq!(
            FileEntry::new(&"a".repeat(32), 0, 0)
                .unwrap()
                .name_str()
                .unwrap()
                .len(),
            32
        );
        for bad in ["", ".", "..", "a/b", "../x", "a\0b"] {
            assert!(FileEntry::new(bad, 0, 0).is_err(), "{bad:?}");
        }
        let mut e2 = e;
        e2.name[10] = b'x'; // bytes after the terminating zero
        assert_eq!(e2.name_str(), None);
        e2 = e;
        e2.name[0] = 0xff; // not UTF-8
        assert_eq!(e2.name_str(), None);
    }

    const TEST_KIND: FileKind = FileKind {
        magic: *b"M3TEST\0\0",
        name: "test",
        version_major: 1,
        version_minor: 0,
    };

    /// A small file of three sections after a 40-byte header, listed with its CRC32C.
    fn listed_file(dir: &Path) -> (PathBuf, FileEntry, [u64; 3]) {
        let mut w = SectionWriter::new(COMMON_HEADER_BYTES + 8);
        let a = w.push(&[1u32, 2, 3]);
        let b = w.push(&[4.5f32; 7]);
        let c = w.push(&[9u8; 5]);
        let path = dir.join("t.m3");
        let entry = w.finish(&path, &TEST_KIND, &[7u32, 8], &[]).unwrap();
        (path, entry, [a, b, c])
    }

    fn open_test(path: &Path) -> SectionReader {
        SectionReader::open::<[u32; 2]>(path, &TEST_KIND).unwrap().0
    }

    /// The CRC32C combined from the sections read and the bytes between them equals the
    /// whole file's, whichever sections were read and in whatever order.
    #[test]
    fn check_listed_combines_section_crcs_with_the_rest_of_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, entry, [a, b, c]) = listed_file(tmp.path());
        let reads: [&[(u64, u64, bool)]; 4] = [
            &[],
            &[(a, 3, true)],
            &[(c, 5, false), (a, 3, true)],
            &[(b, 7, true), (a, 3, true), (c, 5, false)],
        ];
        for read in reads {
            let r = open_test(&path);
            for &(offset, count, words) in read {
                if words {
                    r.section::<u32>(offset, count, "s").unwrap();
                } else {
                    r.section::<u8>(offset, count, "s").unwrap();
                }
            }
            r.check_listed(&entry).unwrap();
            let wrong = FileEntry {
                crc32c: entry.crc32c ^ 1,
                ..entry
            };
            assert!(matches!(
                r.check_listed(&wrong),
                Err(FormatError::Checksum { .. })
            ));
            let longer = FileEntry {
                bytes: entry.bytes + 1,
                ..entry
            };
            assert!(matches!(
                r.check_listed(&longer),
                Err(FormatError::Truncated { .. })
            ));
        }
        // One flipped byte anywhere, read as a section or not, is caught.
        let good = std::fs::read(&path).unwrap();
        for at in [0, 20, a as usize + 1, b as usize + 27, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let Ok((r, _)) = SectionReader::open::<[u32; 2]>(&path, &TEST_KIND) else {
                continue; // a header byte: the header CRC caught it
            };
            r.section::<f32>(b, 7, "s").unwrap();
            assert!(r.check_listed(&entry).is_err(), "byte {at}");
        }
    }

    #[test]
    fn sections_may_not_overlap() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, _, [a, b, _]) = listed_file(tmp.path());
        let r = open_test(&path);
        r.section::<u32>(a, 3, "a").unwrap();
        // Inside a, and straddling the end of b.
        assert!(matches!(
            r.section::<u32>(a + 8, 2, "x"),
            Err(FormatError::Corrupt { .. })
        ));
        r.section::<f32>(b, 7, "b").unwrap();
        assert!(matches!(
            r.section::<u8>(b + 24, 8, "y"),
            Err(FormatError::Corrupt { .. })
        ));
        // Reading the same section twice is an overlap too (no reader does).
        assert!(r.section::<u32>(a, 3, "a").is_err());
    }

    #[test]
    fn sections_are_8_aligned() {
        let mut w = SectionWriter::new(45);
        assert_eq!(w.push(&[1u8, 2, 3]), 48);
        assert_eq!(w.push(&[1u32]), 56);
        assert_eq!(align8(0), 0);
        assert_eq!(align8(9), 16);
    }
}
