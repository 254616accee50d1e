//! A small-file layout (header, then 8-byte-aligned sections, as [`super::file::SectionWriter`]
//! lays them out) written without holding the sections in RAM: their lengths are known up
//! front, so every section's offset is too, and each section is appended in order through its
//! own buffer, while the sections themselves may be filled interleaved (record by record for
//! `pq.m3`'s codes, corrections and errors). The whole-file CRC32C of the manifest entry is
//! combined from the per-section CRCs at the end, without reading the file back.
//!
//! The bytes equal what `SectionWriter` writes for the same header and sections.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytemuck::Pod;

use super::FormatError;
use super::file::{FileEntry, align8};
use super::header::{FileKind, encode_header_with_trailer};

/// Bytes a section buffers before they are written in place.
const FLUSH_BYTES: usize = 1 << 20;

struct Section {
    offset: u64,
    bytes: u64,
    written: u64,
    buf: Vec<u8>,
    crc: u32,
}

/// See the module documentation.
pub(crate) struct StreamedSections {
    path: PathBuf,
    file: File,
    header_bytes: usize,
    sections: Vec<Section>,
    file_bytes: u64,
}

impl StreamedSections {
    /// Creates (or truncates) `path` for a header of `header_bytes` and sections of
    /// `section_bytes` bytes each; returns the writer and the sections' offsets.
    pub(crate) fn create(
        path: &Path,
        header_bytes: usize,
        section_bytes: &[u64],
    ) -> Result<(Self, Vec<u64>), FormatError> {
        let mut end = header_bytes as u64;
        let mut sections = Vec::with_capacity(section_bytes.len());
        for &bytes in section_bytes {
            let offset = align8(end);
            sections.push(Section {
                offset,
                bytes,
                written: 0,
                buf: Vec::new(),
                crc: 0,
            });
            end = offset + bytes;
        }
        let file_bytes = if sections.is_empty() {
            align8(header_bytes as u64)
        } else {
            end
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| FormatError::io(path, e))?;
        file.set_len(file_bytes)
            .map_err(|e| FormatError::io(path, e))?;
        let offsets = sections.iter().map(|s| s.offset).collect();
        Ok((
            Self {
                path: path.to_path_buf(),
                file,
                header_bytes,
                sections,
                file_bytes,
            },
            offsets,
        ))
    }

    /// Appends `items` to section `index`. Writing past the section's length is an error.
    pub(crate) fn append<T: Pod>(&mut self, index: usize, items: &[T]) -> Result<(), FormatError> {
        let bytes: &[u8] = bytemuck::cast_slice(items);
        let s = &mut self.sections[index];
        if s.written + (s.buf.len() + bytes.len()) as u64 > s.bytes {
            return Err(FormatError::invalid(format!(
                "{}: section {index} holds {} bytes; more were appended",
                self.path.display(),
                s.bytes
            )));
        }
        s.buf.extend_from_slice(bytes);
        if s.buf.len() >= FLUSH_BYTES {
            self.flush(index)?;
        }
        Ok(())
    }

    fn flush(&mut self, index: usize) -> Result<(), FormatError> {
        let s = &mut self.sections[index];
        if s.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&s.buf, s.offset + s.written)
            .map_err(|e| FormatError::io(&self.path, e))?;
        s.crc = crc32c::crc32c_append(s.crc, &s.buf);
        s.written += s.buf.len() as u64;
        s.buf.clear();
        Ok(())
    }

    /// Checks that every section is complete, writes the header, fsyncs the file and returns
    /// its manifest entry.
    pub(crate) fn finish<S: Pod>(
        mut self,
        kind: &FileKind,
        specific: &S,
        trailer: &[u8],
    ) -> Result<FileEntry, FormatError> {
        for i in 0..self.sections.len() {
            self.flush(i)?;
            let s = &self.sections[i];
            if s.written != s.bytes {
                return Err(FormatError::invalid(format!(
                    "{}: section {i} got {} of its {} bytes",
                    self.path.display(),
                    s.written,
                    s.bytes
                )));
            }
        }
        let header = encode_header_with_trailer(kind, self.file_bytes, specific, trailer);
        assert_eq!(header.len(), self.header_bytes, "header size mismatch");
        self.file
            .write_all_at(&header, 0)
            .map_err(|e| FormatError::io(&self.path, e))?;
        // The file's CRC in file order: header, zero padding, then each section after its
        // padding.
        const ZEROS: [u8; 8] = [0; 8];
        let mut crc = crc32c::crc32c(&header);
        let mut end = header.len() as u64;
        for s in &self.sections {
            crc = crc32c::crc32c_append(crc, &ZEROS[..(s.offset - end) as usize]);
            crc = crc32c::crc32c_combine(crc, s.crc, s.bytes as usize);
            end = s.offset + s.bytes;
        }
        crc = crc32c::crc32c_append(crc, &ZEROS[..(self.file_bytes - end) as usize]);
        self.file
            .sync_all()
            .map_err(|e| FormatError::io(&self.path, e))?;
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                FormatError::invalid(format!("{}: no file name", self.path.display()))
            })?;
        FileEntry::new(name, self.file_bytes, crc)
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::{SectionWriter, file_crc32c};
    use super::super::header::COMMON_HEADER_BYTES;
    use super::super::keys::KEYS_KIND;
    use super::*;

    /// Section lengths that are not multiples of 8 (padding between sections), filled
    /// interleaved in small pieces: the same bytes and CRC as the in-memory writer.
    #[test]
    fn streamed_file_equals_the_in_memory_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let header_bytes = COMMON_HEADER_BYTES + 16;
        let a: Vec<u8> = (0..3_000_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let b: Vec<u32> = (0..1_000_003u32).map(|i| i ^ 0x5a5a).collect();
        let c: Vec<u8> = vec![9; 5];
        let specific = [1u64, 2u64];

        let mut mem = SectionWriter::new(header_bytes);
        let offs = [mem.push(&a), mem.push(&b), mem.push(&c)];
        let want = mem
            .finish(&tmp.path().join("mem.m3"), &KEYS_KIND, &specific, &[])
            .unwrap();

        let path = tmp.path().join("streamed.m3");
        let (mut w, offsets) = StreamedSections::create(
            &path,
            header_bytes,
            &[a.len() as u64, 4 * b.len() as u64, 5],
        )
        .unwrap();
        assert_eq!(offsets, offs);
        for (i, chunk) in a.chunks(3).enumerate() {
            w.append(0, chunk).unwrap();
            if let Some(x) = b.get(i) {
                w.append(1, std::slice::from_ref(x)).unwrap();
            }
        }
        w.append(1, &b[a.len().div_ceil(3)..]).unwrap();
        w.append(2, &c).unwrap();
        // One byte too many is refused.
        assert!(w.append(2, &[0u8]).is_err());
        let got = w.finish(&KEYS_KIND, &specific, &[]).unwrap();
        assert_eq!(got.bytes, want.bytes);
        assert_eq!(got.crc32c, want.crc32c);
        assert_eq!(file_crc32c(&path).unwrap(), (want.bytes, want.crc32c));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(tmp.path().join("mem.m3")).unwrap()
        );
    }

    #[test]
    fn an_incomplete_section_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("short.m3");
        let (mut w, _) =
            StreamedSections::create(&path, COMMON_HEADER_BYTES + 16, &[8, 8]).unwrap();
        w.append(0, &[1u32, 2]).unwrap();
        w.append(1, &[1u32]).unwrap();
        let err = w.finish(&KEYS_KIND, &[0u64; 2], &[]).unwrap_err();
        assert!(
            err.to_string().contains("section 1 got 4 of its 8 bytes"),
            "{err}"
        );
    }
}
