//! From a converted file's columns to the Batch Server's `RecruitRow` fields.
//!
//! Shared by the server (which encodes `RowChunk`s straight from these views)
//! and the upload client (which turns rows into JSON). Two steps:
//! 1. [`RowMapping`] names the file columns that feed each field (defaults
//!    are the reference pickle's column names; every one can be overridden
//!    with a flag). [`RowMapping::resolve`] checks them against a schema once,
//!    at start-up, and fails with a message that names the column.
//! 2. [`RecruitLayout::columns`] gives, per record batch, a [`RecruitColumns`]
//!    view: typed, zero-copy handles on the batch's arrays with per-row
//!    accessors. Building a view costs a few `Arc` clones; reading a row
//!    allocates nothing. [`RecruitTable`] builds each batch's view the first
//!    time a reader reaches it (which is when the store decodes the batch),
//!    so a damaged batch is an error of the stream that reaches it, not of
//!    start-up.
//!
//! `id` is always the file's key column (UUID v7), formatted lowercase hyphenated.

use std::sync::{Arc, OnceLock};

use arrow_array::{
    cast::AsArray,
    types::{Float32Type, Float64Type},
    Array, FixedSizeBinaryArray, FixedSizeListArray, Float32Array, Float64Array, LargeStringArray,
    RecordBatch, StringArray, StringViewArray,
};
use arrow_buffer::{NullBuffer, ToByteSlice};
use arrow_schema::{DataType, Schema};

pub use crate::format::{
    DEFAULT_COMPANY_NAME_COLUMN, DEFAULT_ENGLISH_LEVEL_COLUMN, DEFAULT_EXP_YEARS_COLUMN,
    DEFAULT_PRIMARY_KEYWORD_COLUMN,
};
use crate::{
    format::{vector_shape, FileLayout},
    store::{BatchError, Store},
};

/// Which file column feeds each `RecruitRow` field. Flatten it into a
/// subcommand's flags with `#[command(flatten)]`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct RowMapping {
    /// Column feeding RecruitRow.company_name (a string column).
    #[arg(long = "company-name-column", default_value = DEFAULT_COMPANY_NAME_COLUMN)]
    pub company_name: String,
    /// Column feeding RecruitRow.exp_years: strings like `2y` (leading digits
    /// are read, none gives 0) or an integer column.
    #[arg(long = "exp-years-column", default_value = DEFAULT_EXP_YEARS_COLUMN)]
    pub exp_years: String,
    /// Column feeding RecruitRow.english_level (a string column).
    #[arg(long = "english-level-column", default_value = DEFAULT_ENGLISH_LEVEL_COLUMN)]
    pub english_level: String,
    /// Column feeding RecruitRow.primary_keyword (a string column).
    #[arg(long = "primary-keyword-column", default_value = DEFAULT_PRIMARY_KEYWORD_COLUMN)]
    pub primary_keyword: String,
    /// Column feeding RecruitRow.vector (FixedSizeList of Float32/Float64);
    /// default: the file's vector column (from its metadata).
    #[arg(long = "vector-column")]
    pub vector: Option<String>,
}

impl Default for RowMapping {
    fn default() -> Self {
        RowMapping {
            company_name: DEFAULT_COMPANY_NAME_COLUMN.to_string(),
            exp_years: DEFAULT_EXP_YEARS_COLUMN.to_string(),
            english_level: DEFAULT_ENGLISH_LEVEL_COLUMN.to_string(),
            primary_keyword: DEFAULT_PRIMARY_KEYWORD_COLUMN.to_string(),
            vector: None,
        }
    }
}

/// Why a file cannot feed `RecruitRow`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowsError {
    /// A mapped column is not in the file.
    #[error("RecruitRow.{field} reads column `{column}`, which the file does not have (columns: {available}); name another with --{flag}")]
    MissingColumn {
        /// The RecruitRow field.
        field: &'static str,
        /// The column asked for.
        column: String,
        /// The flag that changes it.
        flag: &'static str,
        /// The file's columns, comma-separated.
        available: String,
    },
    /// A mapped column has a type the field cannot be read from.
    #[error("RecruitRow.{field} reads column `{column}` of type {found}, expected {expected}; name another with --{flag}")]
    WrongType {
        /// The RecruitRow field.
        field: &'static str,
        /// The column.
        column: String,
        /// The flag that changes it.
        flag: &'static str,
        /// Its type.
        found: String,
        /// What would do.
        expected: &'static str,
    },
    /// No vector column named and none found in the file.
    #[error("RecruitRow.vector needs a FixedSizeList<Float32|Float64> column and the file has none; name one with --vector-column")]
    NoVector,
    /// A batch does not match the schema it was resolved against (a bug or a damaged file).
    #[error("record batch does not match the file schema: column {index} is not {expected}")]
    BatchMismatch {
        /// Column index.
        index: usize,
        /// What was expected.
        expected: &'static str,
    },
}

const STRING_TYPES: &str = "a string column (Utf8, LargeUtf8, Utf8View or a dictionary of strings)";
const EXP_TYPES: &str = "a string column like `2y` or an integer column";
const VECTOR_TYPES: &str = "FixedSizeList<Float32|Float64>";

/// A mapping checked against one schema: column indices and how to read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecruitLayout {
    key: usize,
    company_name: usize,
    exp_years: usize,
    english_level: usize,
    primary_keyword: usize,
    vector: usize,
    vector_dim: usize,
    vector_f64: bool,
}

impl RowMapping {
    /// Check the mapping against `schema` (the key column comes from `layout`).
    pub fn resolve(
        &self,
        schema: &Schema,
        layout: &FileLayout,
    ) -> Result<RecruitLayout, RowsError> {
        let find = |field: &'static str, flag: &'static str, column: &str| {
            schema
                .index_of(column)
                .map_err(|_| RowsError::MissingColumn {
                    field,
                    column: column.to_string(),
                    flag,
                    available: schema
                        .fields()
                        .iter()
                        .map(|f| format!("`{}`", f.name()))
                        .collect::<Vec<_>>()
                        .join(", "),
                })
        };
        let wrong = |field: &'static str, flag: &'static str, index: usize, expected| {
            let f = schema.field(index);
            RowsError::WrongType {
                field,
                column: f.name().clone(),
                flag,
                found: f.data_type().to_string(),
                expected,
            }
        };
        let string = |field, flag, column: &str| {
            let index = find(field, flag, column)?;
            if is_string_type(schema.field(index).data_type()) {
                Ok(index)
            } else {
                Err(wrong(field, flag, index, STRING_TYPES))
            }
        };
        let company_name = string("company_name", "company-name-column", &self.company_name)?;
        let english_level = string("english_level", "english-level-column", &self.english_level)?;
        let primary_keyword = string(
            "primary_keyword",
            "primary-keyword-column",
            &self.primary_keyword,
        )?;
        let exp_years = find("exp_years", "exp-years-column", &self.exp_years)?;
        let exp_type = schema.field(exp_years).data_type();
        if !(is_string_type(exp_type) || is_int_type(exp_type)) {
            return Err(wrong("exp_years", "exp-years-column", exp_years, EXP_TYPES));
        }
        let vector = match &self.vector {
            Some(name) => find("vector", "vector-column", name)?,
            None => layout.vector_index.ok_or(RowsError::NoVector)?,
        };
        let (vector_dim, item) = vector_shape(schema.field(vector).data_type())
            .ok_or_else(|| wrong("vector", "vector-column", vector, VECTOR_TYPES))?;
        Ok(RecruitLayout {
            key: layout.key_index,
            company_name,
            exp_years,
            english_level,
            primary_keyword,
            vector,
            vector_dim,
            vector_f64: item == DataType::Float64,
        })
    }
}

fn is_string_type(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(key, value) => {
            dict_key_supported(key) && matches!(**value, DataType::Utf8 | DataType::LargeUtf8)
        }
        _ => false,
    }
}

/// Any integer type but UInt64 (arrow has no UInt64 dictionary keys here).
fn dict_key_supported(t: &DataType) -> bool {
    is_int_type(t) && t != &DataType::UInt64
}

fn is_int_type(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

impl RecruitLayout {
    /// Vector dimension of every row.
    pub fn vector_dim(&self) -> usize {
        self.vector_dim
    }

    /// Whether the vector column holds Float64 (narrowed to f32 when read).
    pub fn vector_is_f64(&self) -> bool {
        self.vector_f64
    }

    /// Index of the key column (feeds `id`).
    pub fn key_index(&self) -> usize {
        self.key
    }

    /// Index of the vector column.
    pub fn vector_index(&self) -> usize {
        self.vector
    }

    /// Typed views of `batch`'s mapped columns. `batch` must have the schema
    /// this layout was resolved against; otherwise [`RowsError::BatchMismatch`].
    pub fn columns(&self, batch: &RecordBatch) -> Result<RecruitColumns, RowsError> {
        let column = |index: usize, expected| {
            batch
                .columns()
                .get(index)
                .ok_or(RowsError::BatchMismatch { index, expected })
        };
        let key = column(self.key, "FixedSizeBinary(16)")?
            .as_fixed_size_binary_opt()
            .filter(|a| a.value_length() == 16)
            .ok_or(RowsError::BatchMismatch {
                index: self.key,
                expected: "FixedSizeBinary(16)",
            })?
            .clone();
        let strings = |index: usize| {
            column(index, STRING_TYPES).and_then(|a| {
                StrColumn::new(a.as_ref()).ok_or(RowsError::BatchMismatch {
                    index,
                    expected: STRING_TYPES,
                })
            })
        };
        let exp = column(self.exp_years, EXP_TYPES)?;
        let exp_years = match StrColumn::new(exp.as_ref()) {
            Some(s) => ExpColumn::Text(s),
            None => ExpColumn::Int(IntColumn::new(exp.as_ref()).ok_or(
                RowsError::BatchMismatch {
                    index: self.exp_years,
                    expected: EXP_TYPES,
                },
            )?),
        };
        let vector_mismatch = RowsError::BatchMismatch {
            index: self.vector,
            expected: VECTOR_TYPES,
        };
        let list = column(self.vector, VECTOR_TYPES)?
            .as_fixed_size_list_opt()
            .ok_or(vector_mismatch.clone())?
            .clone();
        let values = list.values();
        let vector_values = if let Some(v) = values.as_primitive_opt::<Float32Type>() {
            VectorValuesArray::F32(v.clone())
        } else if let Some(v) = values.as_primitive_opt::<Float64Type>() {
            VectorValuesArray::F64(v.clone())
        } else {
            return Err(vector_mismatch);
        };
        let dim = usize::try_from(list.value_length()).map_err(|_| vector_mismatch.clone())?;
        // A list whose values cannot hold `len * dim` items would make the
        // per-row slices below go out of bounds; arrow validates this when it
        // decodes, we re-check so the accessors can rely on it.
        if list.len().saturating_mul(dim) > vector_values.len() {
            return Err(vector_mismatch);
        }
        Ok(RecruitColumns {
            len: batch.num_rows(),
            key,
            company_name: strings(self.company_name)?,
            exp_years,
            english_level: strings(self.english_level)?,
            primary_keyword: strings(self.primary_keyword)?,
            vector: list,
            vector_values,
            dim,
        })
    }
}

/// Typed, zero-copy views of one record batch's RecruitRow columns.
/// Row accessors take `i < len()`; past the end they return empty values.
#[derive(Debug, Clone)]
pub struct RecruitColumns {
    len: usize,
    key: FixedSizeBinaryArray,
    company_name: StrColumn,
    exp_years: ExpColumn,
    english_level: StrColumn,
    primary_keyword: StrColumn,
    vector: FixedSizeListArray,
    vector_values: VectorValuesArray,
    dim: usize,
}

impl RecruitColumns {
    /// Number of rows in the batch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Vector dimension.
    pub fn vector_dim(&self) -> usize {
        self.dim
    }

    /// The 16 key bytes of row `i` (big-endian UUID).
    pub fn key(&self, i: usize) -> &[u8] {
        if i < self.key.len() {
            self.key.value(i)
        } else {
            &[]
        }
    }

    /// The row's id: its UUID v7 key. `Display` gives lowercase hyphenated;
    /// [`RecruitColumns::id_str`] writes it without allocating.
    pub fn id(&self, i: usize) -> uuid::Uuid {
        <[u8; 16]>::try_from(self.key(i))
            .map(uuid::Uuid::from_bytes)
            .unwrap_or_else(|_| uuid::Uuid::nil())
    }

    /// The row's id as lowercase hyphenated text, written into `buf`.
    pub fn id_str<'b>(&self, i: usize, buf: &'b mut [u8; 36]) -> &'b str {
        self.id(i).hyphenated().encode_lower(buf)
    }

    /// `company_name` of row `i` ("" for a null).
    pub fn company_name(&self, i: usize) -> &str {
        self.company_name.value(i)
    }

    /// `exp_years` of row `i`: leading digits of a string (`2y` → 2, none
    /// → 0, saturating), or an integer column's value clamped to i32.
    pub fn exp_years(&self, i: usize) -> i32 {
        match &self.exp_years {
            ExpColumn::Text(s) => parse_years(s.value(i)),
            ExpColumn::Int(n) => n.value(i),
        }
    }

    /// `english_level` of row `i` ("" for a null).
    pub fn english_level(&self, i: usize) -> &str {
        self.english_level.value(i)
    }

    /// `primary_keyword` of row `i` ("" for a null).
    pub fn primary_keyword(&self, i: usize) -> &str {
        self.primary_keyword.value(i)
    }

    /// The vector of row `i` (empty for a null row or `i` past the end).
    pub fn vector(&self, i: usize) -> VectorRef<'_> {
        if i >= self.vector.len() || self.vector.is_null(i) {
            return VectorRef::F32(&[]);
        }
        // `columns()` checked values.len() >= len * dim and the offset of row
        // i is i * dim (values are sliced with the list), so the range is in
        // bounds; `get` keeps it panic-free regardless.
        let start = self.vector.value_offset_at(i);
        let range = start..start + self.dim;
        match &self.vector_values {
            VectorValuesArray::F32(v) => VectorRef::F32(v.values().get(range).unwrap_or(&[])),
            VectorValuesArray::F64(v) => VectorRef::F64(v.values().get(range).unwrap_or(&[])),
        }
    }
}

/// One row's vector as stored.
#[derive(Debug, Clone, Copy)]
pub enum VectorRef<'a> {
    /// Float32 values, served as is.
    F32(&'a [f32]),
    /// Float64 values, narrowed to f32 when read.
    F64(&'a [f64]),
}

impl<'a> VectorRef<'a> {
    /// Number of components.
    pub fn len(&self) -> usize {
        match self {
            VectorRef::F32(v) => v.len(),
            VectorRef::F64(v) => v.len(),
        }
    }

    /// Whether the vector is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The components as f32 (Float64 narrowed with `as`).
    pub fn iter(&self) -> impl Iterator<Item = f32> + Clone + 'a {
        let (a, b) = match *self {
            VectorRef::F32(v) => (Some(v.iter().copied()), None),
            VectorRef::F64(v) => (None, Some(v.iter().map(|&x| x as f32))),
        };
        a.into_iter().flatten().chain(b.into_iter().flatten())
    }

    /// The components as little-endian f32 bytes, borrowed straight from the
    /// file when it stores Float32 (Arrow buffers are little-endian and so is
    /// every target we build for); `None` for Float64 or a big-endian target.
    pub fn as_le_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            VectorRef::F32(v) if cfg!(target_endian = "little") => Some(v.to_byte_slice()),
            _ => None,
        }
    }
}

/// Leading ASCII digits of `s` as i32 (`"2y"` → 2, `"10y"` → 10, `"no"` → 0),
/// saturating at `i32::MAX`. Leading spaces are skipped.
pub fn parse_years(s: &str) -> i32 {
    s.trim_start()
        .bytes()
        .take_while(u8::is_ascii_digit)
        .fold(0i32, |n, d| {
            n.saturating_mul(10).saturating_add(i32::from(d - b'0'))
        })
}

#[derive(Debug, Clone)]
enum VectorValuesArray {
    F32(Float32Array),
    F64(Float64Array),
}

impl VectorValuesArray {
    fn len(&self) -> usize {
        match self {
            VectorValuesArray::F32(v) => v.len(),
            VectorValuesArray::F64(v) => v.len(),
        }
    }
}

#[derive(Debug, Clone)]
enum ExpColumn {
    Text(StrColumn),
    Int(IntColumn),
}

/// A string column in any of the layouts Arrow writers use, reached with
/// arrow's `AsArray` downcasts.
#[derive(Debug, Clone)]
enum StrColumn {
    Utf8(StringArray),
    Large(LargeStringArray),
    View(StringViewArray),
    /// A dictionary of strings (any integer key type): its keys as indices
    /// into `values` (arrow's `AnyDictionaryArray::normalized_keys`), their
    /// validity, and the values (zero-copy views of the map).
    Dict {
        keys: Arc<[usize]>,
        nulls: Option<NullBuffer>,
        values: Arc<StrColumn>,
    },
}

impl StrColumn {
    fn new(array: &dyn Array) -> Option<Self> {
        if let Some(a) = array.as_string_opt::<i32>() {
            return Some(StrColumn::Utf8(a.clone()));
        }
        if let Some(a) = array.as_string_opt::<i64>() {
            return Some(StrColumn::Large(a.clone()));
        }
        if let Some(a) = array.as_string_view_opt() {
            return Some(StrColumn::View(a.clone()));
        }
        let dict = array.as_any_dictionary_opt()?;
        let values = StrColumn::new(dict.values().as_ref())?;
        if matches!(values, StrColumn::Dict { .. }) {
            return None;
        }
        // `normalized_keys` panics on an empty dictionary; arrow validated
        // the keys against the values when it decoded them, so with no
        // values every key is null: no row reads a value.
        let keys: Arc<[usize]> = if dict.values().is_empty() {
            Arc::from([])
        } else {
            dict.normalized_keys().into()
        };
        Some(StrColumn::Dict {
            keys,
            nulls: dict.keys().nulls().cloned(),
            values: Arc::new(values),
        })
    }

    fn value(&self, i: usize) -> &str {
        fn get<'a, A: Array>(a: &'a A, i: usize, f: impl Fn(&'a A, usize) -> &'a str) -> &'a str {
            if i < a.len() && a.is_valid(i) {
                f(a, i)
            } else {
                ""
            }
        }
        match self {
            StrColumn::Utf8(a) => get(a, i, |a, i| a.value(i)),
            StrColumn::Large(a) => get(a, i, |a, i| a.value(i)),
            StrColumn::View(a) => get(a, i, |a, i| a.value(i)),
            StrColumn::Dict {
                keys,
                nulls,
                values,
            } => match keys.get(i) {
                Some(&k) if nulls.as_ref().is_none_or(|n| n.is_valid(i)) => values.value(k),
                _ => "",
            },
        }
    }
}

/// An integer column read as i32, saturating. arrow's `cast` turns any
/// integer type into Float64 once per batch: exact for every value in
/// i32's range, and a larger magnitude saturates in `as i32` exactly as
/// clamping the integer would (f64 rounds it to a value still beyond the range).
#[derive(Debug, Clone)]
struct IntColumn(Float64Array);

impl IntColumn {
    fn new(array: &dyn Array) -> Option<Self> {
        if !is_int_type(array.data_type()) {
            return None;
        }
        let wide = arrow_cast::cast(array, &DataType::Float64).ok()?;
        wide.as_primitive_opt::<Float64Type>()
            .cloned()
            .map(IntColumn)
    }

    fn value(&self, i: usize) -> i32 {
        if i < self.0.len() && self.0.is_valid(i) {
            // Saturating float-to-int conversion.
            self.0.value(i) as i32
        } else {
            0
        }
    }
}

/// The mapped store with a [`RecruitColumns`] view of each batch, built the
/// first time a reader reaches the batch (decoding it: see [`Store::batch`])
/// and shared by all streams from then on.
#[derive(Debug)]
pub struct RecruitTable {
    store: Arc<Store>,
    layout: RecruitLayout,
    columns: Vec<OnceLock<Result<RecruitColumns, BatchError>>>,
}

impl RecruitTable {
    /// A table over `store` under `layout` (resolved against its schema);
    /// no batch is decoded yet.
    pub fn new(store: Arc<Store>, layout: RecruitLayout) -> Self {
        let columns = (0..store.num_batches()).map(|_| OnceLock::new()).collect();
        RecruitTable {
            store,
            layout,
            columns,
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The resolved mapping.
    pub fn layout(&self) -> &RecruitLayout {
        &self.layout
    }

    /// Total rows.
    pub fn num_rows(&self) -> usize {
        self.store.num_rows()
    }

    /// The views of batch `b`, built (and the batch decoded) on the first
    /// call; the error, which names the batch, is cached as well.
    pub fn columns(&self, b: usize) -> Result<&RecruitColumns, BatchError> {
        let cell = self.columns.get(b).ok_or_else(|| BatchError {
            batch: b,
            reason: format!("the file has {} record batches", self.columns.len()),
        })?;
        cell.get_or_init(|| {
            let batch = self.store.batch(b)?;
            self.layout.columns(batch).map_err(|e| BatchError {
                batch: b,
                reason: e.to_string(),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    /// Call `f(columns, first, end)` for each batch segment of global rows
    /// `start..end` (clamped to the file), in order. Stops at the first batch
    /// that cannot be decoded and returns its error (segments before it have
    /// been passed to `f`).
    pub fn for_segments(
        &self,
        start: usize,
        end: usize,
        mut f: impl FnMut(&RecruitColumns, usize, usize),
    ) -> Result<(), BatchError> {
        let end = end.min(self.num_rows());
        let mut row = start;
        while row < end {
            let (b, i) = self.store.locate(row);
            let cols = self.columns(b)?;
            let take = (cols.len().saturating_sub(i)).min(end - row);
            if take == 0 {
                // An empty batch cannot be returned by `locate` for a row
                // inside the file; stop rather than loop.
                return Ok(());
            }
            f(cols, i, i + take);
            row += take;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{
        builder::{FixedSizeListBuilder, Float64Builder, StringDictionaryBuilder},
        types::{Int32Type, Int8Type},
        ArrayRef, Int64Array,
    };
    use arrow_schema::Field;

    fn batch(exp: ArrayRef, company: ArrayRef) -> RecordBatch {
        let mut keys = arrow_array::builder::FixedSizeBinaryBuilder::new(16);
        keys.append_value([1u8; 16]).unwrap();
        keys.append_value([2u8; 16]).unwrap();
        let mut vectors = FixedSizeListBuilder::new(Float64Builder::new(), 2);
        vectors.values().append_slice(&[1.5, 2.25]);
        vectors.append(true);
        vectors.values().append_slice(&[0.0, 0.0]);
        vectors.append(false);
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("uuid", Arc::new(keys.finish())),
            ("Company Name", company),
            ("Exp Years", exp),
            (
                "English Level",
                Arc::new(StringArray::from(vec!["upper", "pre"])),
            ),
            (
                "Primary Keyword",
                Arc::new(LargeStringArray::from(vec!["Rust", "Go"])),
            ),
            ("v", Arc::new(vectors.finish())),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn layout(schema: &Schema) -> FileLayout {
        FileLayout::from_schema(schema, None).unwrap()
    }

    #[test]
    fn reads_every_field_from_mixed_layouts() {
        let mut dict = StringDictionaryBuilder::<Int32Type>::new();
        dict.append_value("Acme");
        dict.append_null();
        let b = batch(
            Arc::new(StringArray::from(vec![Some("10y"), None])),
            Arc::new(dict.finish()),
        );
        let l = RowMapping::default()
            .resolve(&b.schema(), &layout(&b.schema()))
            .unwrap();
        assert!(l.vector_is_f64());
        let c = l.columns(&b).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c.id(0).to_string(), "01010101-0101-0101-0101-010101010101");
        let mut buf = [0u8; 36];
        assert_eq!(
            c.id_str(1, &mut buf),
            "02020202-0202-0202-0202-020202020202"
        );
        assert_eq!((c.company_name(0), c.company_name(1)), ("Acme", ""));
        assert_eq!((c.exp_years(0), c.exp_years(1)), (10, 0));
        assert_eq!(c.english_level(1), "pre");
        assert_eq!(c.primary_keyword(0), "Rust");
        assert_eq!(c.vector(0).iter().collect::<Vec<_>>(), vec![1.5f32, 2.25]);
        assert!(c.vector(0).as_le_bytes().is_none());
        assert!(c.vector(1).is_empty());
        // Past the end: empty values, no panic.
        assert_eq!(
            (c.company_name(9), c.exp_years(9), c.key(9).len()),
            ("", 0, 0)
        );
    }

    #[test]
    fn dictionaries_of_any_key_type_and_an_empty_one() {
        use arrow_array::{types::UInt16Type, DictionaryArray, UInt16Array};
        let values: ArrayRef = Arc::new(StringArray::from(vec!["x", "y"]));
        let keys = UInt16Array::from(vec![Some(1), None]);
        let dict = DictionaryArray::<UInt16Type>::try_new(keys, values).unwrap();
        let column = StrColumn::new(&dict).unwrap();
        assert_eq!(
            (column.value(0), column.value(1), column.value(2)),
            ("y", "", "")
        );
        // No values at all (every key null): arrow's `normalized_keys`
        // would panic on it; every row reads "".
        let empty: ArrayRef = Arc::new(StringArray::from(Vec::<&str>::new()));
        let keys = arrow_array::Int8Array::from(vec![None, None]);
        let dict = DictionaryArray::<Int8Type>::try_new(keys, empty).unwrap();
        let column = StrColumn::new(&dict).unwrap();
        assert_eq!((column.value(0), column.value(1)), ("", ""));
    }

    #[test]
    fn integer_exp_years_and_parsing() {
        let b = batch(
            Arc::new(Int64Array::from(vec![Some(7), Some(i64::MAX)])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        );
        let c = RowMapping::default()
            .resolve(&b.schema(), &layout(&b.schema()))
            .unwrap()
            .columns(&b)
            .unwrap();
        assert_eq!((c.exp_years(0), c.exp_years(1)), (7, i32::MAX));
        assert_eq!(parse_years("2y"), 2);
        assert_eq!(parse_years(" 12 years"), 12);
        assert_eq!(parse_years("no_exp"), 0);
        assert_eq!(parse_years("99999999999y"), i32::MAX);
    }

    #[test]
    fn refusals_name_the_column() {
        let b = batch(
            Arc::new(StringArray::from(vec!["1y", "2y"])),
            Arc::new(StringArray::from(vec!["a", "b"])),
        );
        let schema = b.schema();
        let mapping = RowMapping {
            english_level: "Level".into(),
            ..RowMapping::default()
        };
        let err = mapping.resolve(&schema, &layout(&schema)).unwrap_err();
        assert!(err.to_string().starts_with(
            "RecruitRow.english_level reads column `Level`, which the file does not have"
        ));
        assert!(err
            .to_string()
            .ends_with("name another with --english-level-column"));
        let mapping = RowMapping {
            company_name: "uuid".into(),
            ..RowMapping::default()
        };
        let err = mapping.resolve(&schema, &layout(&schema)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("RecruitRow.company_name reads column `uuid` of type FixedSizeBinary(16), expected {STRING_TYPES}; name another with --company-name-column")
        );
        let mapping = RowMapping {
            vector: Some("Exp Years".into()),
            ..RowMapping::default()
        };
        let err = mapping.resolve(&schema, &layout(&schema)).unwrap_err();
        assert!(err
            .to_string()
            .contains("expected FixedSizeList<Float32|Float64>"));
        let no_vector = Schema::new(vec![crate::format::key_field("uuid")]);
        let no_vector_layout = layout(&no_vector);
        let mapping = RowMapping::default();
        let err = mapping.resolve(&no_vector, &no_vector_layout).unwrap_err();
        assert!(matches!(
            err,
            RowsError::MissingColumn {
                field: "company_name",
                ..
            }
        ));
        let _ = Field::new("x", DataType::Utf8, true);
    }
}
