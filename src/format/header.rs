//! The common header every index file starts with (see docs/FORMAT.md, "Common header").
//!
//! ```text
//! offset  size  field
//!      0     8  magic            file kind, e.g. b"M3MANIF\0"
//!      8     2  version_major    incompatible changes
//!     10     2  version_minor    additive changes (readers accept any minor)
//!     12     4  header_bytes     common header + kind-specific header, bytes
//!     16     8  file_bytes       whole file length, bytes
//!     24     4  header_crc32c    CRC32C of bytes [0, header_bytes) with this field zeroed
//!     28     4  reserved         zero
//! ```
//! The kind-specific header follows at offset 32 and is covered by `header_crc32c`.

use std::path::Path;

use bytemuck::{Pod, Zeroable};

use super::FormatError;

/// Size of [`CommonHeader`] in bytes.
pub const COMMON_HEADER_BYTES: usize = 32;
/// Byte offset of `header_crc32c` inside the common header.
pub const HEADER_CRC_OFFSET: usize = 24;

/// The first 32 bytes of every index file.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct CommonHeader {
    pub magic: [u8; 8],
    pub version_major: u16,
    pub version_minor: u16,
    pub header_bytes: u32,
    pub file_bytes: u64,
    pub header_crc32c: u32,
    pub reserved: u32,
}

const _: () = assert!(std::mem::size_of::<CommonHeader>() == COMMON_HEADER_BYTES);

/// What a reader expects of a file kind.
#[derive(Debug, Clone, Copy)]
pub struct FileKind {
    pub magic: [u8; 8],
    pub name: &'static str,
    pub version_major: u16,
    pub version_minor: u16,
}

/// Serialises `common` + `specific` into one header buffer with its CRC filled in.
/// `common.header_bytes` is set from the buffer length.
pub fn encode_header<S: Pod>(kind: &FileKind, file_bytes: u64, specific: &S) -> Vec<u8> {
    encode_header_with_trailer(kind, file_bytes, specific, &[])
}

/// Like [`encode_header`], with `trailer` appended inside the header (after the kind-specific
/// struct, covered by the CRC and counted in `header_bytes`): the manifest's file entries.
pub fn encode_header_with_trailer<S: Pod>(
    kind: &FileKind,
    file_bytes: u64,
    specific: &S,
    trailer: &[u8],
) -> Vec<u8> {
    let spec = bytemuck::bytes_of(specific);
    let header_bytes = COMMON_HEADER_BYTES + spec.len() + trailer.len();
    let common = CommonHeader {
        magic: kind.magic,
        version_major: kind.version_major,
        version_minor: kind.version_minor,
        header_bytes: header_bytes as u32,
        file_bytes,
        header_crc32c: 0,
        reserved: 0,
    };
    let mut buf = Vec::with_capacity(header_bytes);
    buf.extend_from_slice(bytemuck::bytes_of(&common));
    buf.extend_from_slice(spec);
    buf.extend_from_slice(trailer);
    let crc = crc32c::crc32c(&buf);
    buf[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
    buf
}

/// Parses and checks the header at the start of `bytes` (the file's first bytes; at least
/// the whole header): magic, major version, header length, header CRC, and that the file is
/// `actual_file_bytes` long as recorded. Returns the common header and the kind-specific one.
pub fn decode_header<S: Pod>(
    path: &Path,
    kind: &FileKind,
    bytes: &[u8],
    actual_file_bytes: u64,
) -> Result<(CommonHeader, S), FormatError> {
    let need = COMMON_HEADER_BYTES + std::mem::size_of::<S>();
    if bytes.len() < COMMON_HEADER_BYTES || (actual_file_bytes as usize) < COMMON_HEADER_BYTES {
        return Err(FormatError::Truncated {
            path: path.into(),
            expected_bytes: need as u64,
            found_bytes: actual_file_bytes.min(bytes.len() as u64),
        });
    }
    let common: CommonHeader = bytemuck::pod_read_unaligned(&bytes[..COMMON_HEADER_BYTES]);
    if common.magic != kind.magic {
        return Err(FormatError::BadMagic {
            path: path.into(),
            expected: kind.name,
            found: common.magic,
        });
    }
    if common.version_major != kind.version_major {
        return Err(FormatError::UnsupportedVersion {
            path: path.into(),
            major: common.version_major,
            minor: common.version_minor,
            supported_major: kind.version_major,
        });
    }
    // A newer minor version may append fields: the header may be longer than we know.
    if (common.header_bytes as usize) < need {
        return Err(FormatError::corrupt(
            path,
            12,
            format!("header_bytes {} < {need}", common.header_bytes),
        ));
    }
    let hb = common.header_bytes as usize;
    if bytes.len() < hb || actual_file_bytes < hb as u64 {
        return Err(FormatError::Truncated {
            path: path.into(),
            expected_bytes: hb as u64,
            found_bytes: actual_file_bytes.min(bytes.len() as u64),
        });
    }
    let mut copy = bytes[..hb].to_vec();
    copy[HEADER_CRC_OFFSET..HEADER_CRC_OFFSET + 4].fill(0);
    let computed = crc32c::crc32c(&copy);
    if computed != common.header_crc32c {
        return Err(FormatError::HeaderChecksum {
            path: path.into(),
            stored: common.header_crc32c,
            computed,
        });
    }
    if common.file_bytes != actual_file_bytes {
        return Err(FormatError::Truncated {
            path: path.into(),
            expected_bytes: common.file_bytes,
            found_bytes: actual_file_bytes,
        });
    }
    let specific: S = bytemuck::pod_read_unaligned(&bytes[COMMON_HEADER_BYTES..need]);
    Ok((common, specific))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
    struct Spec {
        a: u64,
        b: u32,
        c: u32,
    }

    const KIND: FileKind = FileKind {
        magic: *b"M3TEST\0\0",
        name: "test",
        version_major: 1,
        version_minor: 0,
    };

    #[test]
    fn round_trip() {
        let spec = Spec { a: 7, b: 8, c: 9 };
        let h = encode_header(&KIND, 48, &spec);
        assert_eq!(h.len(), 48);
        let (c, s): (CommonHeader, Spec) = decode_header(Path::new("t"), &KIND, &h, 48).unwrap();
        assert_eq!(s, spec);
        assert_eq!(c.header_bytes, 48);
    }

    #[test]
    fn every_flipped_or_truncated_byte_is_a_typed_error() {
        let spec = Spec { a: 7, b: 8, c: 9 };
        let h = encode_header(&KIND, 48, &spec);
        for i in 0..h.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = h.clone();
                bad[i] ^= bit;
                assert!(
                    decode_header::<Spec>(Path::new("t"), &KIND, &bad, 48).is_err(),
                    "flip of byte {i} bit {bit:#x} accepted"
                );
            }
        }
        for len in 0..h.len() {
            assert!(decode_header::<Spec>(Path::new("t"), &KIND, &h[..len], len as u64).is_err());
        }
        assert!(matches!(
            decode_header::<Spec>(Path::new("t"), &KIND, &h, 49),
            Err(FormatError::Truncated { .. })
        ));
    }

    #[test]
    fn trailer_is_inside_the_header_and_its_crc() {
        let spec = Spec { a: 1, b: 2, c: 3 };
        let trailer = [9u8; 16];
        let h = encode_header_with_trailer(&KIND, 64, &spec, &trailer);
        assert_eq!(h.len(), 64);
        assert_eq!(&h[48..], &trailer);
        let (c, s): (CommonHeader, Spec) = decode_header(Path::new("t"), &KIND, &h, 64).unwrap();
        assert_eq!((c.header_bytes, s), (64, spec));
        let mut bad = h.clone();
        bad[60] ^= 1;
        assert!(matches!(
            decode_header::<Spec>(Path::new("t"), &KIND, &bad, 64),
            Err(FormatError::HeaderChecksum { .. })
        ));
        assert_eq!(
            encode_header(&KIND, 48, &spec),
            encode_header_with_trailer(&KIND, 48, &spec, &[])
        );
    }

    #[test]
    fn newer_major_is_refused_newer_minor_accepted() {
        let spec = Spec { a: 1, b: 2, c: 3 };
        let newer = FileKind {
            version_major: 2,
            ..KIND
        };
        let h = encode_header(&newer, 48, &spec);
        assert!(matches!(
            decode_header::<Spec>(Path::new("t"), &KIND, &h, 48),
            Err(FormatError::UnsupportedVersion { major: 2, .. })
        ));
        let minor = FileKind {
            version_minor: 3,
            ..KIND
        };
        let h = encode_header(&minor, 48, &spec);
        assert!(decode_header::<Spec>(Path::new("t"), &KIND, &h, 48).is_ok());
    }
}
