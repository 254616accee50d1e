//! NumPy arrays in and out: the dtype and shape checks (each error names the argument), views
//! without a copy where the array allows it, and the result arrays.

use m3::{DType, MatrixView};
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn,
    PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyAnyMethods;

use crate::errors::Error;

/// The elements of an array in C order: borrowed when the array is C-contiguous, else copied
/// once.
pub enum Elems<'py, T: numpy::Element> {
    Borrowed(PyReadonlyArrayDyn<'py, T>),
    Owned(Vec<T>),
}

impl<T: numpy::Element + Copy> Elems<'_, T> {
    pub fn slice(&self) -> &[T] {
        match self {
            Elems::Borrowed(a) => a.as_slice().unwrap_or(&[]),
            Elems::Owned(v) => v,
        }
    }

    pub fn is_borrowed(&self) -> bool {
        matches!(self, Elems::Borrowed(_))
    }
}

fn elems<'py, T: numpy::Element + Copy>(arr: &Bound<'py, PyAny>) -> PyResult<Elems<'py, T>> {
    let a = arr.cast::<PyArrayDyn<T>>()?;
    let ro = a.try_readonly()?;
    // `as_slice` also accepts Fortran order, whose element order is not the rows'.
    if ro.is_c_contiguous() && ro.as_slice().is_ok() {
        return Ok(Elems::Borrowed(ro));
    }
    Ok(Elems::Owned(ro.as_array().iter().copied().collect()))
}

/// A 2-D array as rows × dim (a 1-D array is one row when `one_row_ok`).
pub struct Shaped<'py> {
    pub array: Bound<'py, PyUntypedArray>,
    pub rows: usize,
    pub dim: usize,
}

/// `obj` as an ndarray (anything `numpy.asarray` takes), checked to be (rows, dim) with
/// dim ≥ 1.
pub fn shaped<'py>(obj: &Bound<'py, PyAny>, name: &str, one_row_ok: bool) -> PyResult<Shaped<'py>> {
    let py = obj.py();
    let array = match obj.cast::<PyUntypedArray>() {
        Ok(a) => a.clone(),
        Err(_) => {
            let np = py.import("numpy")?;
            let converted = np.call_method1("asarray", (obj,)).map_err(|e| {
                Error::invalid(format!(
                    "{name}: expected a NumPy array, not convertible: {e}"
                ))
            })?;
            converted.cast_into::<PyUntypedArray>()?
        }
    };
    let shape = array.shape().to_vec();
    let (rows, dim) = match (shape.as_slice(), one_row_ok) {
        ([d], true) => (1, *d),
        ([n, d], _) => (*n, *d),
        _ => {
            let want = if one_row_ok {
                "(n, dim) or (dim,)"
            } else {
                "(n, dim)"
            };
            return Err(Error::invalid(format!(
                "{name}: expected an array of shape {want}, got shape {shape:?}"
            ))
            .into());
        }
    };
    if dim == 0 {
        return Err(Error::invalid(format!("{name}: has dimension 0")).into());
    }
    Ok(Shaped { array, rows, dim })
}

fn dtype_name(a: &Bound<'_, PyUntypedArray>) -> String {
    a.dtype().to_string()
}

/// f32 rows of a query-like array: float32 (no copy when C-contiguous), float64, uint8 or
/// int8 (converted once).
pub struct F32Rows<'py> {
    pub elems: Elems<'py, f32>,
    pub rows: usize,
    pub dim: usize,
}

impl F32Rows<'_> {
    pub fn view(&self) -> Result<MatrixView<'_, f32>, Error> {
        MatrixView::new(self.elems.slice(), self.dim).map_err(Error::from)
    }
}

pub fn f32_rows<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
    one_row_ok: bool,
) -> PyResult<F32Rows<'py>> {
    let s = shaped(obj, name, one_row_ok)?;
    let any = s.array.as_any();
    let dt = s.array.dtype();
    let py = obj.py();
    let elems = if dt.is_equiv_to(&numpy::dtype::<f32>(py)) {
        elems::<f32>(any)?
    } else if dt.is_equiv_to(&numpy::dtype::<f64>(py)) {
        Elems::Owned(
            elems::<f64>(any)?
                .slice()
                .iter()
                .map(|&x| x as f32)
                .collect(),
        )
    } else if dt.is_equiv_to(&numpy::dtype::<u8>(py)) {
        Elems::Owned(
            elems::<u8>(any)?
                .slice()
                .iter()
                .map(|&x| f32::from(x))
                .collect(),
        )
    } else if dt.is_equiv_to(&numpy::dtype::<i8>(py)) {
        Elems::Owned(
            elems::<i8>(any)?
                .slice()
                .iter()
                .map(|&x| f32::from(x))
                .collect(),
        )
    } else {
        return Err(Error::invalid(format!(
            "{name}: dtype {} is not supported (use float32, float64, uint8 or int8)",
            dtype_name(&s.array)
        ))
        .into());
    };
    Ok(F32Rows {
        elems,
        rows: s.rows,
        dim: s.dim,
    })
}

/// A base array in its stored element type: float32, uint8 or int8.
pub enum NativeRows<'py> {
    F32(Elems<'py, f32>),
    U8(Elems<'py, u8>),
    I8(Elems<'py, i8>),
}

impl NativeRows<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            NativeRows::F32(_) => DType::F32,
            NativeRows::U8(_) => DType::U8,
            NativeRows::I8(_) => DType::I8,
        }
    }
}

pub fn native_rows<'py>(
    obj: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<(NativeRows<'py>, usize, usize)> {
    let s = shaped(obj, name, false)?;
    let any = s.array.as_any();
    let dt = s.array.dtype();
    let py = obj.py();
    let rows = if dt.is_equiv_to(&numpy::dtype::<f32>(py)) {
        NativeRows::F32(elems::<f32>(any)?)
    } else if dt.is_equiv_to(&numpy::dtype::<u8>(py)) {
        NativeRows::U8(elems::<u8>(any)?)
    } else if dt.is_equiv_to(&numpy::dtype::<i8>(py)) {
        NativeRows::I8(elems::<i8>(any)?)
    } else {
        return Err(Error::invalid(format!(
            "{name}: dtype {} is not supported (use float32, uint8 or int8; e.g. {name}.astype(numpy.float32))",
            dtype_name(&s.array)
        ))
        .into());
    };
    Ok((rows, s.rows, s.dim))
}

/// A 1-D array of non-negative integer ids (any integer dtype).
pub fn user_ids(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<u64>> {
    let py = obj.py();
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let a = arr.cast::<PyUntypedArray>()?;
    if a.ndim() != 1 {
        return Err(Error::invalid(format!(
            "{name}: expected a 1-D array of ids, got shape {:?}",
            a.shape()
        ))
        .into());
    }
    if a.len() == 0 {
        return Ok(Vec::new());
    }
    let kind = a.dtype().kind();
    if kind != b'i' && kind != b'u' {
        return Err(Error::invalid(format!(
            "{name}: ids must be integers, got dtype {}",
            dtype_name(a)
        ))
        .into());
    }
    if kind == b'u' {
        let as_u64 = arr.call_method1("astype", ("uint64",))?;
        return Ok(elems::<u64>(&as_u64)?.slice().to_vec());
    }
    let as_i64 = arr.call_method1("astype", ("int64",))?;
    let v = elems::<i64>(&as_i64)?;
    v.slice()
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            u64::try_from(x)
                .map_err(|_| Error::invalid(format!("{name}[{i}] = {x}: ids must be ≥ 0")).into())
        })
        .collect()
}

/// `(ids, distances)`, `(nq, k)` each.
pub type Pair<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// (nq, k) ids and distances as NumPy arrays.
pub fn table<'py>(
    py: Python<'py>,
    ids: Vec<i64>,
    dists: Vec<f32>,
    k: usize,
) -> PyResult<Pair<'py>> {
    let nq = ids.len().checked_div(k).unwrap_or(0);
    let shape_err = |e: numpy::ndarray::ShapeError| Error::invalid(format!("result shape: {e}"));
    let ids = Array2::from_shape_vec((nq, k), ids).map_err(shape_err)?;
    let dists = Array2::from_shape_vec((nq, k), dists).map_err(shape_err)?;
    Ok((ids.into_pyarray(py), dists.into_pyarray(py)))
}
