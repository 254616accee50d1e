//! Row-major matrices: an owned [`Matrix`] and a borrowed, shape-checked [`MatrixView`].

use super::DataError;

/// A borrowed row-major `rows × dim` matrix. The shape is checked once at construction, so
/// code receiving a view never re-checks `data.len() == rows * dim`.
#[derive(Debug, Clone, Copy)]
pub struct MatrixView<'a, T> {
    data: &'a [T],
    dim: usize,
}

impl<'a, T> MatrixView<'a, T> {
    /// A view over `data` with rows of `dim` elements. Fails when `dim == 0` or when
    /// `data.len()` is not a multiple of `dim`.
    pub fn new(data: &'a [T], dim: usize) -> Result<Self, DataError> {
        if dim == 0 {
            return Err(DataError::ZeroDim);
        }
        if !data.len().is_multiple_of(dim) {
            return Err(DataError::Shape {
                len: data.len(),
                dim,
            });
        }
        Ok(Self { data, dim })
    }

    /// Number of rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Elements per row (at least 1).
    #[inline]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether the view has no rows.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Row `i`. Panics when `i >= rows()`, like slice indexing.
    #[inline]
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All elements, row after row.
    #[inline]
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }

    /// Rows `start..end` as a view.
    pub fn slice_rows(&self, start: usize, end: usize) -> MatrixView<'a, T> {
        MatrixView {
            data: &self.data[start * self.dim..end * self.dim],
            dim: self.dim,
        }
    }

    /// The rows, in order.
    pub fn iter_rows(&self) -> std::slice::ChunksExact<'a, T> {
        self.data.chunks_exact(self.dim)
    }
}

/// An owned row-major matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix<T> {
    data: Vec<T>,
    dim: usize,
}

impl<T: Copy + Default> Matrix<T> {
    /// `rows × dim` filled with `T::default()`.
    pub fn zeros(rows: usize, dim: usize) -> Result<Self, DataError> {
        if dim == 0 {
            return Err(DataError::ZeroDim);
        }
        let len = rows.checked_mul(dim).ok_or(DataError::Overflow {
            what: "matrix size",
        })?;
        Ok(Self {
            data: vec![T::default(); len],
            dim,
        })
    }
}

impl<T> Matrix<T> {
    /// A matrix of rows of `dim` elements from `data`, row after row. Fails when `dim` is 0
    /// or `data.len()` is not a multiple of it.
    pub fn from_vec(data: Vec<T>, dim: usize) -> Result<Self, DataError> {
        MatrixView::new(&data, dim)?;
        Ok(Self { data, dim })
    }

    /// A borrowed view of the whole matrix.
    pub fn view(&self) -> MatrixView<'_, T> {
        MatrixView {
            data: &self.data,
            dim: self.dim,
        }
    }

    /// Number of rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim
    }

    /// Elements per row (at least 1).
    #[inline]
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`. Panics when `i >= rows()`, like slice indexing.
    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Row `i`, mutable. Panics when `i >= rows()`.
    #[inline]
    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        &mut self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// All elements, row after row.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// All elements, row after row, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The elements, row after row, without copying.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_checks_shape() {
        let v = [1.0f32; 6];
        assert_eq!(MatrixView::new(&v, 3).unwrap().rows(), 2);
        assert!(matches!(
            MatrixView::new(&v, 4),
            Err(DataError::Shape { len: 6, dim: 4 })
        ));
        assert!(matches!(MatrixView::new(&v, 0), Err(DataError::ZeroDim)));
    }

    #[test]
    fn rows_and_slices() {
        let m = Matrix::from_vec((0..12).collect::<Vec<u32>>(), 4).unwrap();
        assert_eq!(m.row(2), &[8, 9, 10, 11]);
        let s = m.view().slice_rows(1, 3);
        assert_eq!(s.rows(), 2);
        assert_eq!(s.row(0), &[4, 5, 6, 7]);
    }
}
