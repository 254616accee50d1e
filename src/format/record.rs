//! One record of `data.m3`: `vector | id | degree | neighbours`, fixed size per index.
//!
//! ```text
//! [0, V)            vector, dim × dtype bytes, zero padded to V = align4(dim · esize)
//! [V, V+4)          id        u32  original base row
//! [V+4, V+8)        degree    u32  valid neighbours, ≤ max_degree
//! [V+8, V+8+4·R)    neighbours u32 × max_degree: global record indices, then u32::MAX
//! ```
//! `record_bytes = align4(dim·esize) + 8 + 4·max_degree`; a 50-d f32 record with R = 32 is
//! `200 + 8 + 128 = 336` bytes (12 per sector). See `docs/FORMAT.md`, "Record layout".

use std::path::Path;

use super::FormatError;
use super::clusters::NO_ID;
use crate::data::{DType, Element};

/// Encodes and decodes records of one index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCodec {
    dim: u32,
    dtype: DType,
    max_degree: u32,
    record_bytes: u32,
    /// Neighbour ids must be below this (u64::MAX: unchecked).
    n_records: u64,
    /// Record ids (base rows) must be below this (u64::MAX: unchecked).
    n_vectors: u64,
}

/// `align4(dim·esize) + 8 + 4·max_degree`, or `None` when it does not fit a u32.
pub fn record_bytes(dim: u32, dtype: DType, max_degree: u32) -> Option<u32> {
    let v = (dim as u64 * dtype.size_bytes() as u64).div_ceil(4) * 4;
    u32::try_from(v + 8 + 4 * max_degree as u64).ok()
}

impl RecordCodec {
    /// A codec for `dim ≥ 1` elements of `dtype` and `max_degree` neighbour slots.
    pub fn new(dim: u32, dtype: DType, max_degree: u32) -> Result<Self, FormatError> {
        let record_bytes = record_bytes(dim, dtype, max_degree)
            .filter(|_| dim > 0)
            .ok_or_else(|| FormatError::invalid(format!("bad record shape dim {dim}")))?;
        Ok(Self {
            dim,
            dtype,
            max_degree,
            record_bytes,
            n_records: u64::MAX,
            n_vectors: u64::MAX,
        })
    }

    /// The same codec, rejecting neighbour ids `≥ n_records` on decode.
    pub fn with_n_records(self, n_records: u64) -> Self {
        Self { n_records, ..self }
    }

    /// The same codec, rejecting record ids (base rows) `≥ n_vectors` on decode.
    pub fn with_n_vectors(self, n_vectors: u64) -> Self {
        Self { n_vectors, ..self }
    }

    pub fn dim(&self) -> u32 {
        self.dim
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn max_degree(&self) -> u32 {
        self.max_degree
    }

    pub fn record_bytes(&self) -> u32 {
        self.record_bytes
    }

    /// Bytes of the vector, padding excluded.
    pub fn vector_bytes(&self) -> usize {
        self.dim as usize * self.dtype.size_bytes()
    }

    fn id_offset(&self) -> usize {
        self.vector_bytes().div_ceil(4) * 4
    }

    /// Writes one record into `out[..record_bytes]`: `vector` (`dim` elements of the codec's
    /// dtype), `id`, and up to `max_degree` neighbours (the rest is filled with [`NO_ID`]).
    pub fn encode<T: Element>(
        &self,
        vector: &[T],
        id: u32,
        neighbours: &[u32],
        out: &mut [u8],
    ) -> Result<(), FormatError> {
        if T::DTYPE != self.dtype || vector.len() != self.dim as usize {
            return Err(FormatError::invalid(format!(
                "record vector is {} × {}, codec wants {} × {}",
                vector.len(),
                T::DTYPE,
                self.dim,
                self.dtype
            )));
        }
        if neighbours.len() > self.max_degree as usize {
            return Err(FormatError::invalid(format!(
                "{} neighbours > max_degree {}",
                neighbours.len(),
                self.max_degree
            )));
        }
        let out = out
            .get_mut(..self.record_bytes as usize)
            .ok_or_else(|| FormatError::invalid("record buffer too short"))?;
        let vb = self.vector_bytes();
        let io = self.id_offset();
        out[..vb].copy_from_slice(bytemuck::cast_slice(vector));
        out[vb..io].fill(0);
        out[io..io + 4].copy_from_slice(&id.to_le_bytes());
        out[io + 4..io + 8].copy_from_slice(&(neighbours.len() as u32).to_le_bytes());
        for (slot, chunk) in out[io + 8..].chunks_exact_mut(4).enumerate() {
            let v = neighbours.get(slot).copied().unwrap_or(NO_ID);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// [`Self::encode`] from f32 values, each converted to the codec's dtype; refused when a
    /// value is not exactly one of the dtype ([`DType::holds`]: an integer in range for u8
    /// and i8), so nothing is rounded or clamped.
    pub fn encode_f32(
        &self,
        vector: &[f32],
        id: u32,
        neighbours: &[u32],
        out: &mut [u8],
    ) -> Result<(), FormatError> {
        if let Some(i) = vector.iter().position(|&x| !self.dtype.holds(x)) {
            return Err(FormatError::invalid(format!(
                "record vector component {i} is {}, not a {} value",
                vector[i], self.dtype
            )));
        }
        match self.dtype {
            DType::F32 => self.encode(vector, id, neighbours, out),
            DType::U8 => {
                let v: Vec<u8> = vector.iter().map(|&x| x as u8).collect();
                self.encode(&v, id, neighbours, out)
            }
            DType::I8 => {
                let v: Vec<i8> = vector.iter().map(|&x| x as i8).collect();
                self.encode(&v, id, neighbours, out)
            }
        }
    }

    /// Parses the record at the start of `bytes`, which were read from `path` at byte
    /// `file_offset` (for the error). Checks that the id is below `n_vectors`
    /// ([`Self::with_n_vectors`]), the degree, that the unused slots are [`NO_ID`] and that
    /// neighbours are below `n_records` ([`Self::with_n_records`]).
    pub fn decode<'a>(
        &self,
        bytes: &'a [u8],
        path: &Path,
        file_offset: u64,
    ) -> Result<RecordView<'a>, FormatError> {
        let bytes =
            bytes
                .get(..self.record_bytes as usize)
                .ok_or_else(|| FormatError::Truncated {
                    path: path.into(),
                    expected_bytes: file_offset + self.record_bytes as u64,
                    found_bytes: file_offset + bytes.len() as u64,
                })?;
        let view = RecordView {
            bytes,
            codec: *self,
        };
        let id = view.id();
        if id as u64 >= self.n_vectors {
            return Err(FormatError::corrupt(
                path,
                file_offset + self.id_offset() as u64,
                format!("record id {id} ≥ n_vectors {}", self.n_vectors),
            ));
        }
        let degree = view.degree();
        let at = file_offset + self.id_offset() as u64 + 4;
        if degree > self.max_degree {
            return Err(FormatError::corrupt(
                path,
                at,
                format!("degree {degree} > max_degree {}", self.max_degree),
            ));
        }
        for (slot, v) in view.slots().enumerate() {
            let ok = if slot < degree as usize {
                (v as u64) < self.n_records
            } else {
                v == NO_ID
            };
            if !ok {
                return Err(FormatError::corrupt(
                    path,
                    at + 4 + 4 * slot as u64,
                    format!("neighbour slot {slot} holds {v} (degree {degree})"),
                ));
            }
        }
        Ok(view)
    }
}

/// A decoded record borrowing its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
    codec: RecordCodec,
}

impl<'a> RecordView<'a> {
    /// The vector's bytes (`dim × esize`, padding excluded).
    pub fn vector_bytes(&self) -> &'a [u8] {
        &self.bytes[..self.codec.vector_bytes()]
    }

    /// The element type of the vector.
    pub fn dtype(&self) -> DType {
        self.codec.dtype
    }

    /// The vector as `T`, or `None` when `T` is not the index's dtype.
    pub fn vector<T: Element>(&self) -> Option<Vec<T>> {
        (T::DTYPE == self.codec.dtype).then(|| super::file::pod_vec(self.vector_bytes()))
    }

    /// The vector as f32 into `out` (`dim` long; exact for every dtype).
    pub fn vector_f32_into(&self, out: &mut [f32]) {
        let b = self.vector_bytes();
        match self.codec.dtype {
            DType::F32 => out
                .iter_mut()
                .zip(b.chunks_exact(4))
                .for_each(|(o, c)| *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            DType::U8 => out.iter_mut().zip(b).for_each(|(o, &x)| *o = f32::from(x)),
            DType::I8 => out
                .iter_mut()
                .zip(b)
                .for_each(|(o, &x)| *o = f32::from(x as i8)),
        }
    }

    /// The vector as f32 (exact for every dtype).
    pub fn vector_f32(&self) -> Vec<f32> {
        let mut v = vec![0f32; self.codec.dim as usize];
        self.vector_f32_into(&mut v);
        v
    }

    /// The first component that is not a finite number (f32 records; u8 and i8 are always
    /// finite).
    pub fn first_non_finite(&self) -> Option<usize> {
        if self.codec.dtype != DType::F32 {
            return None;
        }
        self.vector_bytes()
            .chunks_exact(4)
            .position(|c| !f32::from_le_bytes(c.try_into().expect("4 bytes")).is_finite())
    }

    /// The vector's Euclidean norm, computed in f64.
    pub fn norm(&self) -> f64 {
        let b = self.vector_bytes();
        let sum: f64 = match self.codec.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))).powi(2))
                .sum(),
            DType::U8 => b.iter().map(|&v| f64::from(v).powi(2)).sum(),
            DType::I8 => b.iter().map(|&v| f64::from(v as i8).powi(2)).sum(),
        };
        sum.sqrt()
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.bytes[off..off + 4].try_into().expect("4 bytes"))
    }

    pub fn id(&self) -> u32 {
        self.u32_at(self.codec.id_offset())
    }

    pub fn degree(&self) -> u32 {
        self.u32_at(self.codec.id_offset() + 4)
    }

    fn slots(&self) -> impl Iterator<Item = u32> + 'a {
        self.bytes[self.codec.id_offset() + 8..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
    }

    /// The `degree` valid neighbour record indices.
    pub fn neighbours(&self) -> impl Iterator<Item = u32> + 'a {
        self.slots().take(self.degree() as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_f32_stores_exact_integers_and_refuses_the_rest() {
        let p = Path::new("x");
        for dtype in [DType::U8, DType::I8, DType::F32] {
            let codec = RecordCodec::new(3, dtype, 2).unwrap();
            let mut out = vec![0u8; codec.record_bytes() as usize];
            let v = match dtype {
                DType::U8 => [0.0, 7.0, 255.0],
                DType::I8 => [-128.0, 0.0, 127.0],
                DType::F32 => [-1.5, 0.25, 3e9],
            };
            codec.encode_f32(&v, 5, &[1], &mut out).unwrap();
            let rec = codec.decode(&out, p, 0).unwrap();
            assert_eq!(rec.vector_f32(), v, "{dtype}");
            assert_eq!((rec.id(), rec.degree()), (5, 1));
        }
        let codec = RecordCodec::new(2, DType::U8, 0).unwrap();
        let mut out = vec![0u8; codec.record_bytes() as usize];
        for bad in [[1.0, 256.0], [1.5, 0.0], [-1.0, 0.0], [f32::NAN, 0.0]] {
            let e = codec.encode_f32(&bad, 0, &[], &mut out).unwrap_err();
            assert!(e.to_string().contains("not a u8 value"), "{e}");
        }
    }
}
