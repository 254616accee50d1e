//! Row-level checks of input vectors: finite components, non-zero norm under cosine.

use std::path::Path;

use super::{DataError, MatrixView};

/// Fails on the first NaN or infinite component. `first_row` is the file row of `rows.row(0)`,
/// so the error names the row of the file, not of the chunk.
pub fn check_finite(
    path: &Path,
    first_row: u64,
    rows: MatrixView<'_, f32>,
) -> Result<(), DataError> {
    for (i, row) in rows.iter_rows().enumerate() {
        if row.iter().all(|v| v.is_finite()) {
            continue;
        }
        let (col, &value) = row
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite())
            .expect("a non-finite component exists");
        return Err(DataError::NonFinite {
            path: path.to_path_buf(),
            row: first_row + i as u64,
            col,
            value,
        });
    }
    Ok(())
}

/// Fails on the first all-zero row (which has no direction, so cosine is undefined).
pub fn check_nonzero(
    path: &Path,
    first_row: u64,
    rows: MatrixView<'_, f32>,
) -> Result<(), DataError> {
    for (i, row) in rows.iter_rows().enumerate() {
        if row.iter().all(|&v| v == 0.0) {
            return Err(DataError::ZeroVector {
                path: path.to_path_buf(),
                row: first_row + i as u64,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nan_row_and_column() {
        let data = [1.0, 2.0, 3.0, 4.0, f32::NAN, 6.0];
        let v = MatrixView::new(&data, 3).unwrap();
        match check_finite(Path::new("x.fbin"), 10, v) {
            Err(DataError::NonFinite { row, col, .. }) => assert_eq!((row, col), (11, 1)),
            other => panic!("expected NonFinite, got {other:?}"),
        }
        let inf = [f32::INFINITY, 0.0];
        assert!(check_finite(Path::new("x"), 0, MatrixView::new(&inf, 2).unwrap()).is_err());
        let ok = [1.0, 0.0];
        assert!(check_finite(Path::new("x"), 0, MatrixView::new(&ok, 2).unwrap()).is_ok());
    }

    #[test]
    fn finds_zero_row() {
        let data = [1.0, 0.0, 0.0, 0.0];
        let v = MatrixView::new(&data, 2).unwrap();
        assert!(matches!(
            check_nonzero(Path::new("x"), 5, v),
            Err(DataError::ZeroVector { row: 6, .. })
        ));
    }
}
