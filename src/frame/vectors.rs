//! Vector columns, rebuilt batch by batch.
//!
//! A column of per-row numpy arrays (the embeddings) is by far the largest
//! part of a frame. Building it whole would hold a second copy of the data
//! next to the pickle; instead the frame keeps, per row, a view of the
//! array's bytes in the mapped pickle ([`VectorCells`]), and the writer asks
//! for one batch of rows at a time ([`VectorCells::slice`]), which is
//! narrowed into a fresh `FixedSizeList` and written before the next one is
//! built. Every check (shape, length, element type) is made when the cells
//! are collected, so a ragged row is refused before anything is written.

use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array, Float64Array};
use arrow_buffer::{BooleanBuffer, NullBuffer};
use arrow_schema::{DataType, Field};
use bytes::Bytes;

use super::{
    build::bad,
    ndarray::{element_f64, half_to_f64, DType, NpKind},
    FrameError,
};
use crate::pickle::PickleSource;

/// One row of a vector column.
#[derive(Debug, Clone)]
pub(crate) enum VectorCell {
    /// None/NaN: a null row.
    Null,
    /// A 1-D numpy array: its bytes and the index of its dtype in
    /// [`VectorCells::dtypes`].
    Raw(Bytes, u8),
    /// A Python list of numbers, already read.
    Values(Box<[f64]>),
}

/// A vector column as views of the input, materialized per batch.
///
/// Invariants: every `Raw` cell holds exactly `dim` items of a numeric dtype
/// listed in `dtypes`; every `Values` cell holds `dim` numbers; `nulls`, if
/// any, has one bit per cell.
pub struct VectorCells {
    pub(crate) cells: Vec<VectorCell>,
    pub(crate) dtypes: Vec<DType>,
    pub(crate) dim: usize,
    pub(crate) keep_float64: bool,
    pub(crate) nulls: Option<NullBuffer>,
    /// The mapped pickle, to drop pages behind the last batch built.
    pub(crate) source: Option<PickleSource>,
}

impl std::fmt::Debug for VectorCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorCells")
            .field("rows", &self.cells.len())
            .field("dim", &self.dim)
            .field("keep_float64", &self.keep_float64)
            .finish()
    }
}

impl VectorCells {
    /// Rows.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Items per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Null rows.
    pub fn null_count(&self) -> usize {
        self.nulls.as_ref().map_or(0, |n| n.null_count())
    }

    /// The element type of the built column.
    pub fn item_type(&self) -> DataType {
        if self.keep_float64 {
            DataType::Float64
        } else {
            DataType::Float32
        }
    }

    /// `FixedSizeList<item, dim>`.
    pub fn data_type(&self) -> DataType {
        DataType::FixedSizeList(
            Arc::new(Field::new_list_field(self.item_type(), false)),
            i32::try_from(self.dim).unwrap_or(i32::MAX),
        )
    }

    /// Bytes per row once built.
    pub fn row_bytes(&self) -> usize {
        self.dim * if self.keep_float64 { 8 } else { 4 }
    }

    /// Build rows `start..start + len` (clamped to the column) as a
    /// `FixedSizeList` array.
    pub fn slice(&self, start: usize, len: usize) -> Result<ArrayRef, FrameError> {
        let start = start.min(self.cells.len());
        let end = start.saturating_add(len).min(self.cells.len());
        let nulls = self.nulls.as_ref().map(|n| n.slice(start, end - start));
        self.build(self.cells[start..end].iter(), nulls)
    }

    /// Build rows `rows` (in that order) as one `FixedSizeList` array: what
    /// [`slice`](Self::slice) builds for each row, without building slices
    /// and concatenating them (a refresh writes rows in OLD's order).
    pub fn take(&self, rows: &[u32]) -> Result<ArrayRef, FrameError> {
        let cells = rows
            .iter()
            .map(|&r| self.cells.get(r as usize))
            .collect::<Option<Vec<&VectorCell>>>()
            .ok_or_else(|| bad("vector row out of range"))?;
        let nulls = self.nulls.as_ref().map(|n| {
            NullBuffer::new(BooleanBuffer::collect_bool(rows.len(), |k| {
                n.is_valid(rows[k] as usize)
            }))
        });
        self.build(cells.into_iter(), nulls)
    }

    fn build<'a>(
        &'a self,
        cells: impl ExactSizeIterator<Item = &'a VectorCell>,
        nulls: Option<NullBuffer>,
    ) -> Result<ArrayRef, FrameError> {
        let mut out = Narrowed::new(self.keep_float64, cells.len() * self.dim)?;
        let mut last_raw: Option<&Bytes> = None;
        for cell in cells {
            match cell {
                VectorCell::Null => out.zeros(self.dim),
                VectorCell::Raw(raw, dtype) => {
                    out.push_raw(self.dtype(*dtype)?, raw)?;
                    last_raw = Some(raw);
                }
                VectorCell::Values(values) => values.iter().for_each(|x| out.push(*x)),
            }
        }
        // The rows of this batch are built: their pages of the pickle can go.
        if let Some(raw) = last_raw {
            self.release_through_raw(raw);
        }
        let dim = i32::try_from(self.dim).map_err(|_| bad("vector dimension too large"))?;
        let field = Arc::new(Field::new_list_field(self.item_type(), false));
        let list = FixedSizeListArray::try_new(field, dim, out.finish(), nulls)
            .map_err(|e| bad(format!("vector column: {e}")))?;
        Ok(Arc::new(list))
    }

    fn dtype(&self, index: u8) -> Result<&DType, FrameError> {
        self.dtypes
            .get(usize::from(index))
            .ok_or_else(|| bad("vector cell without its dtype"))
    }

    fn release_through_raw(&self, raw: &Bytes) {
        if let Some(source) = &self.source {
            if let Some(offset) = source.offset_of(raw) {
                source.release_before(offset + raw.len());
            }
        }
    }
}

/// The values of a vector column being built: float32 (narrowed) or float64.
pub(crate) enum Narrowed {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl Narrowed {
    /// Room for `capacity` items, reserved with `try_reserve` so that a batch
    /// too large for memory is an error, not an abort.
    pub(crate) fn new(keep_float64: bool, capacity: usize) -> Result<Self, FrameError> {
        let too_large = |_| {
            bad(format!(
                "cannot allocate {capacity} vector items for one batch; use smaller batches"
            ))
        };
        Ok(if keep_float64 {
            let mut v = Vec::new();
            v.try_reserve_exact(capacity).map_err(too_large)?;
            Narrowed::F64(v)
        } else {
            let mut v = Vec::new();
            v.try_reserve_exact(capacity).map_err(too_large)?;
            Narrowed::F32(v)
        })
    }

    pub(crate) fn push(&mut self, x: f64) {
        match self {
            Narrowed::F32(v) => v.push(x as f32),
            Narrowed::F64(v) => v.push(x),
        }
    }

    pub(crate) fn zeros(&mut self, n: usize) {
        match self {
            Narrowed::F32(v) => v.resize(v.len() + n, 0.0),
            Narrowed::F64(v) => v.resize(v.len() + n, 0.0),
        }
    }

    /// Append the items of a numeric numpy buffer. Little-endian float64 and
    /// float32 (the common embeddings) take a tight loop; other numeric
    /// dtypes go through [`element_f64`].
    pub(crate) fn push_raw(&mut self, dtype: &DType, raw: &[u8]) -> Result<(), FrameError> {
        match (dtype.kind, dtype.size, dtype.big_endian, &mut *self) {
            (NpKind::Float, 8, false, Narrowed::F32(out)) => out.extend(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32),
            ),
            (NpKind::Float, 8, false, Narrowed::F64(out)) => out.extend(
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))),
            ),
            (NpKind::Float, 4, false, Narrowed::F32(out)) => out.extend(
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4]))),
            ),
            (NpKind::Float, 2, big_endian, _) => {
                for c in raw.chunks_exact(2) {
                    let pair = [c[0], c[1]];
                    let bits = if big_endian {
                        u16::from_be_bytes(pair)
                    } else {
                        u16::from_le_bytes(pair)
                    };
                    self.push(half_to_f64(bits));
                }
            }
            _ => {
                for c in raw.chunks_exact(dtype.size.max(1)) {
                    let x = element_f64(dtype, c).ok_or_else(|| bad("vector element"))?;
                    self.push(x);
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            Narrowed::F32(v) => Arc::new(Float32Array::from(v)),
            Narrowed::F64(v) => Arc::new(Float64Array::from(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{cast::AsArray, types::Float32Type, Array};
    use arrow_buffer::BooleanBuffer;

    fn dtype(kind: NpKind, size: usize, big_endian: bool) -> DType {
        DType {
            kind,
            size,
            big_endian,
            unit: None,
        }
    }

    /// Null rows, float64 / float32 / big-endian int16 arrays and a Python
    /// list in one column: every row reads back the same whether the column
    /// is built whole or in slices of any length.
    #[test]
    fn slices_of_mixed_cells_equal_the_whole() {
        let f64s: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let f32s: Vec<u8> = [0.25f32, 8.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let i16s: Vec<u8> = [-3i16, 7].iter().flat_map(|x| x.to_be_bytes()).collect();
        let cells = vec![
            VectorCell::Raw(Bytes::from(f64s), 0),
            VectorCell::Null,
            VectorCell::Raw(Bytes::from(f32s), 1),
            VectorCell::Values(vec![4.0, 5.0].into_boxed_slice()),
            VectorCell::Raw(Bytes::from(i16s), 2),
        ];
        let valid = [true, false, true, true, true];
        let column = VectorCells {
            cells,
            dtypes: vec![
                dtype(NpKind::Float, 8, false),
                dtype(NpKind::Float, 4, false),
                dtype(NpKind::Int, 2, true),
            ],
            dim: 2,
            keep_float64: false,
            nulls: Some(NullBuffer::new(BooleanBuffer::from(valid.as_slice()))),
            source: None,
        };
        let expected: [Option<[f32; 2]>; 5] = [
            Some([1.5, -2.0]),
            None,
            Some([0.25, 8.0]),
            Some([4.0, 5.0]),
            Some([-3.0, 7.0]),
        ];
        for step in 1..=5 {
            let mut row = 0;
            while row < 5 {
                let array = column.slice(row, step).unwrap();
                let list = array.as_fixed_size_list();
                assert_eq!(list.len(), step.min(5 - row));
                for i in 0..list.len() {
                    match expected[row + i] {
                        None => assert!(list.is_null(i), "row {}", row + i),
                        Some(want) => {
                            let got = list.value(i);
                            let got = got.as_primitive::<Float32Type>().values();
                            assert_eq!(got.as_ref(), &want, "row {}", row + i);
                        }
                    }
                }
                row += step;
            }
        }
        assert_eq!(column.null_count(), 1);
        assert_eq!(column.row_bytes(), 8);
        // Past the end: an empty slice, not a panic.
        assert_eq!(column.slice(7, 3).unwrap().len(), 0);
    }

    /// `take` builds what the slices build, in any order, for every kind of
    /// cell (float64 narrowed, float32, another dtype, a Python list, null).
    #[test]
    fn take_builds_what_slices_build() {
        let f64s =
            |xs: &[f64]| Bytes::from(xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        let f32s =
            |xs: &[f32]| Bytes::from(xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
        let i16s: Vec<u8> = [-3i16, 7, 0].iter().flat_map(|x| x.to_be_bytes()).collect();
        let column = VectorCells {
            cells: vec![
                VectorCell::Raw(f64s(&[1.5, -2.0, 8.25 + 1e-12]), 0),
                VectorCell::Null,
                VectorCell::Raw(f32s(&[0.25, 8.0, 0.0]), 1),
                VectorCell::Values(vec![4.0, 5.0, 0.1].into_boxed_slice()),
                VectorCell::Raw(Bytes::from(i16s), 2),
            ],
            dtypes: vec![
                dtype(NpKind::Float, 8, false),
                dtype(NpKind::Float, 4, false),
                dtype(NpKind::Int, 2, true),
            ],
            dim: 3,
            keep_float64: false,
            nulls: Some(NullBuffer::new(BooleanBuffer::from(
                [true, false, true, true, true].as_slice(),
            ))),
            source: None,
        };
        let whole = column.slice(0, 5).unwrap();
        let whole = whole.as_fixed_size_list();
        let values = whole
            .values()
            .as_primitive::<Float32Type>()
            .values()
            .to_vec();
        let row = |i: usize| values[i * 3..(i + 1) * 3].to_vec();
        let order = [4u32, 0, 2, 1, 3, 0];
        let taken = column.take(&order).unwrap();
        let taken = taken.as_fixed_size_list();
        assert_eq!(taken.len(), order.len());
        for (k, &r) in order.iter().enumerate() {
            let r = r as usize;
            assert_eq!(taken.is_null(k), whole.is_null(r), "take row {k}");
            if !whole.is_null(r) {
                let got = taken.value(k);
                assert_eq!(
                    got.as_primitive::<Float32Type>().values().as_ref(),
                    row(r).as_slice()
                );
            }
        }
        assert!(column.take(&[5]).is_err());
        assert_eq!(column.take(&[]).unwrap().len(), 0);
    }
}
