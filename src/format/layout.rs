//! Sector arithmetic of the cluster data file: how fixed-size records pack into 4 KiB sectors.
//!
//! A record never straddles a sector boundary when it fits in one sector: a sector holds
//! `⌊4096 / record_bytes⌋` records and the tail of the sector is zero padding. A record larger
//! than a sector starts on a sector boundary and occupies `⌈record_bytes / 4096⌉` whole sectors.
//! Every cluster starts on a sector boundary, so a cluster of `n` records occupies
//! [`RecordLayout::sectors_for`]`(n)` sectors.
//!
//! Worked numbers (record = vector | id | degree | neighbours, see [`super::record`]): a 50-d
//! f32 record with 32 neighbours is `200 + 8 + 128 = 336` bytes, so 12 records share a sector
//! (4,032 bytes used, 64 padding) and record 30 of a cluster lives in the cluster's sector 2
//! at byte 6 · 336 = 2,016. A 960-d f32 record with 64 neighbours is `3,840 + 8 + 256 = 4,104`
//! bytes: 2 sectors per record, record 5 at sectors 10–11.

/// The unit of I/O and alignment: one 4 KiB sector (defined by the block readers, [`crate::io`]).
pub use crate::io::SECTOR_BYTES;

/// How records of one size pack into sectors. Built only through [`RecordLayout::new`], which
/// guarantees `record_bytes >= 1` and exactly one of `records_per_sector >= 1` (small
/// records) or `sectors_per_record >= 2` (large records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLayout {
    record_bytes: u32,
    records_per_sector: u32,
    sectors_per_record: u32,
}

/// Where a record lives, relative to the first sector of its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLocation {
    /// First sector of the record, counted from the cluster's first sector.
    pub sector: u64,
    /// Byte offset of the record inside that sector.
    pub offset_bytes: u32,
    /// Sectors to read to get the whole record.
    pub sectors: u32,
}

impl RecordLayout {
    /// Layout for records of `record_bytes` (≥ 1) bytes.
    pub fn new(record_bytes: u32) -> Option<Self> {
        if record_bytes == 0 {
            return None;
        }
        let sb = SECTOR_BYTES as u32;
        Some(if record_bytes <= sb {
            Self {
                record_bytes,
                records_per_sector: sb / record_bytes,
                sectors_per_record: 1,
            }
        } else {
            Self {
                record_bytes,
                records_per_sector: 0,
                sectors_per_record: record_bytes.div_ceil(sb),
            }
        })
    }

    pub fn record_bytes(&self) -> u32 {
        self.record_bytes
    }

    /// Records per sector (0 when a record needs several sectors).
    pub fn records_per_sector(&self) -> u32 {
        self.records_per_sector
    }

    /// Sectors per record (1 when records share sectors).
    pub fn sectors_per_record(&self) -> u32 {
        self.sectors_per_record
    }

    /// Sectors occupied by a cluster of `n` records.
    pub fn sectors_for(&self, n: u64) -> u64 {
        if self.records_per_sector > 0 {
            n.div_ceil(self.records_per_sector as u64)
        } else {
            n * self.sectors_per_record as u64
        }
    }

    /// Location of record `i` of a cluster.
    pub fn locate(&self, i: u64) -> RecordLocation {
        if self.records_per_sector > 0 {
            let rps = self.records_per_sector as u64;
            RecordLocation {
                sector: i / rps,
                offset_bytes: ((i % rps) * self.record_bytes as u64) as u32,
                sectors: 1,
            }
        } else {
            RecordLocation {
                sector: i * self.sectors_per_record as u64,
                offset_bytes: 0,
                sectors: self.sectors_per_record,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worked_numbers_from_the_doc() {
        let l = RecordLayout::new(336).unwrap();
        assert_eq!(l.records_per_sector(), 12);
        assert_eq!(
            l.locate(30),
            RecordLocation {
                sector: 2,
                offset_bytes: 2016,
                sectors: 1
            }
        );
        let big = RecordLayout::new(4104).unwrap();
        assert_eq!(big.sectors_per_record(), 2);
        assert_eq!(big.locate(5).sector, 10);
        assert_eq!(big.sectors_for(3), 6);
        assert!(RecordLayout::new(0).is_none());
    }

    proptest! {
        #[test]
        fn records_never_straddle_or_overlap(record_bytes in 1u32..20_000, n in 1u64..500) {
            let l = RecordLayout::new(record_bytes).unwrap();
            let total = l.sectors_for(n);
            let mut prev_end: Option<(u64, u64)> = None; // absolute byte end of previous record
            for i in 0..n {
                let loc = l.locate(i);
                let start = loc.sector * SECTOR_BYTES as u64 + loc.offset_bytes as u64;
                let end = start + record_bytes as u64;
                // inside the cluster's sectors
                prop_assert!(end <= total * SECTOR_BYTES as u64);
                // the sectors to read cover the record
                prop_assert!(end <= (loc.sector + loc.sectors as u64) * SECTOR_BYTES as u64);
                if record_bytes as usize <= SECTOR_BYTES {
                    // no straddling: start and last byte in the same sector
                    prop_assert_eq!(start / SECTOR_BYTES as u64, (end - 1) / SECTOR_BYTES as u64);
                } else {
                    prop_assert_eq!(loc.offset_bytes, 0);
                }
                if let Some((_, pend)) = prev_end {
                    prop_assert!(start >= pend, "records overlap");
                }
                prev_end = Some((start, end));
            }
            // no wasted whole sector at the end
            let last = l.locate(n - 1);
            prop_assert_eq!(last.sector + last.sectors as u64, total);
        }
    }
}
