//! The converted file's contract, shared by the writer ([`crate::convert`]) and
//! every reader ([`crate::store`], [`crate::inspect`], the clients).
//!
//! An embedstream file is an ordinary Arrow IPC file (or Parquet with
//! `--format parquet`) plus:
//! - a key column (default `uuid`): `FixedSizeBinary(16)` with the canonical
//!   `arrow.uuid` extension type, holding RFC 9562 version 7 UUIDs that are
//!   **strictly increasing in row order** (so a checkpoint is found by binary
//!   search and compared bytewise: v7 big-endian bytes sort by time, then
//!   counter, then random bits);
//! - at most one vector column: `FixedSizeList<Float32 | Float64, dim>`;
//! - schema metadata under the `embedstream.` prefix, see the constants below.

use std::collections::HashMap;

use arrow_schema::{DataType, Field, Schema};

/// Default name of the key column added by `convert`.
pub const DEFAULT_KEY_COLUMN: &str = "uuid";

/// Arrow canonical extension type name for UUIDs.
pub const UUID_EXTENSION_NAME: &str = "arrow.uuid";
/// Field metadata key that carries an extension type name.
pub const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
/// Field metadata key that carries an extension type's parameters.
pub const EXTENSION_METADATA_KEY: &str = "ARROW:extension:metadata";

/// Schema metadata: name of the key column.
pub const META_KEY_COLUMN: &str = "embedstream.key_column";
/// Schema metadata: name of the vector column (absent when there is none).
pub const META_VECTOR_COLUMN: &str = "embedstream.vector_column";
/// Schema metadata: dimension of the vector column.
pub const META_VECTOR_DIM: &str = "embedstream.vector_dim";
/// Schema metadata: number of rows.
pub const META_ROWS: &str = "embedstream.rows";
/// Schema metadata: file name of the pickle it was converted from.
pub const META_SOURCE: &str = "embedstream.source";
/// Schema metadata: version of embedstream that wrote the file.
pub const META_VERSION: &str = "embedstream.version";
/// Schema metadata: `"true"` when the writer checked that keys are strictly
/// increasing. Readers may then check only batch boundaries at open.
pub const META_KEYS_SORTED: &str = "embedstream.keys_sorted";

/// Width of a UUID in bytes.
pub const UUID_WIDTH: i32 = 16;

/// The key column's field: `FixedSizeBinary(16)` tagged `arrow.uuid`.
pub fn key_field(name: &str) -> Field {
    Field::new(name, DataType::FixedSizeBinary(UUID_WIDTH), false).with_metadata(HashMap::from([
        (
            EXTENSION_NAME_KEY.to_string(),
            UUID_EXTENSION_NAME.to_string(),
        ),
        (EXTENSION_METADATA_KEY.to_string(), String::new()),
    ]))
}

/// Whether `field` can be a key column: 16-byte fixed-size binary.
pub fn is_key_type(field: &Field) -> bool {
    field.data_type() == &DataType::FixedSizeBinary(UUID_WIDTH)
}

/// The vector column's dimension and element type, if `data_type` is a
/// fixed-size list of Float32 or Float64.
pub fn vector_shape(data_type: &DataType) -> Option<(usize, DataType)> {
    match data_type {
        DataType::FixedSizeList(item, dim)
            if matches!(item.data_type(), DataType::Float32 | DataType::Float64) =>
        {
            Some((usize::try_from(*dim).ok()?, item.data_type().clone()))
        }
        _ => None,
    }
}

/// Which column is the key and which the vector, read from the schema
/// metadata, falling back to the defaults (`uuid`, the only vector column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    /// Index of the key column in the schema.
    pub key_index: usize,
    /// Index of the vector column, if there is one.
    pub vector_index: Option<usize>,
    /// Vector dimension (0 without a vector column).
    pub vector_dim: usize,
    /// Whether the writer vouched that keys are strictly increasing.
    pub keys_verified_by_writer: bool,
}

/// Why a schema is not an embedstream file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    /// No key column of that name.
    #[error("the file has no key column `{0}`; convert the pickle with `embedstream convert`, or name the key column with --key-column")]
    MissingKey(String),
    /// A key column of the wrong type.
    #[error("the key column `{name}` is {found}, expected FixedSizeBinary(16) UUIDs")]
    KeyType {
        /// Column name.
        name: String,
        /// The type found.
        found: String,
    },
    /// A vector column named in metadata is missing or of the wrong type.
    #[error("the vector column `{0}` is missing or not a FixedSizeList of Float32/Float64")]
    Vector(String),
}

impl FileLayout {
    /// Find the key and vector columns. `key_override` wins over metadata.
    pub fn from_schema(schema: &Schema, key_override: Option<&str>) -> Result<Self, LayoutError> {
        let meta = schema.metadata();
        let key_name = key_override
            .or_else(|| meta.get(META_KEY_COLUMN).map(String::as_str))
            .unwrap_or(DEFAULT_KEY_COLUMN);
        let key_index = schema
            .index_of(key_name)
            .map_err(|_| LayoutError::MissingKey(key_name.to_string()))?;
        let key = schema.field(key_index);
        if !is_key_type(key) {
            return Err(LayoutError::KeyType {
                name: key_name.to_string(),
                found: key.data_type().to_string(),
            });
        }
        let vector_index = match meta.get(META_VECTOR_COLUMN) {
            Some(name) => Some(
                schema
                    .index_of(name)
                    .ok()
                    .filter(|&i| vector_shape(schema.field(i).data_type()).is_some())
                    .ok_or_else(|| LayoutError::Vector(name.clone()))?,
            ),
            None => schema
                .fields()
                .iter()
                .position(|f| vector_shape(f.data_type()).is_some()),
        };
        let vector_dim = vector_index
            .and_then(|i| vector_shape(schema.field(i).data_type()))
            .map_or(0, |(dim, _)| dim);
        Ok(FileLayout {
            key_index,
            vector_index,
            vector_dim,
            keys_verified_by_writer: meta.get(META_KEYS_SORTED).map(String::as_str) == Some("true"),
        })
    }
}

/// Format 16 key bytes as a lowercase hyphenated UUID.
pub fn format_uuid(bytes: &[u8]) -> String {
    match <[u8; 16]>::try_from(bytes) {
        Ok(b) => uuid::Uuid::from_bytes(b).hyphenated().to_string(),
        Err(_) => String::from("<not a uuid>"),
    }
}

// ---------------------------------------------------------------------------
// Refresh (`convert --previous`): generation and lineage metadata.
// ---------------------------------------------------------------------------

/// Schema metadata: generation of the file's keys. A plain conversion is
/// generation 1; a refresh against OLD is OLD's generation + 1 (a file
/// without this entry counts as generation 1). `serve` reports it for the
/// generation it serves.
pub const META_GENERATION: &str = "embedstream.generation";
/// Schema metadata (refresh): the column rows were matched on.
pub const META_REFRESH_MATCH_ON: &str = "embedstream.refresh.match_on";
/// Schema metadata (refresh): `keep` or `renew`, what changed rows got.
pub const META_REFRESH_ON_CHANGE: &str = "embedstream.refresh.on_change";
/// Schema metadata (refresh): rows found in OLD (their match value), changed or not.
pub const META_REFRESH_KEPT: &str = "embedstream.refresh.kept";
/// Schema metadata (refresh): rows new to this export.
pub const META_REFRESH_ADDED: &str = "embedstream.refresh.added";
/// Schema metadata (refresh): OLD rows no longer exported.
pub const META_REFRESH_REMOVED: &str = "embedstream.refresh.removed";
/// Schema metadata (refresh): kept rows whose other columns differ from OLD's.
pub const META_REFRESH_CHANGED: &str = "embedstream.refresh.changed";
/// Schema metadata (refresh): OLD's file name.
pub const META_PREVIOUS_FILE: &str = "embedstream.previous.file";
/// Schema metadata (refresh): OLD's row count.
pub const META_PREVIOUS_ROWS: &str = "embedstream.previous.rows";
/// Schema metadata (refresh): OLD's last key, hyphenated (absent if OLD had no rows).
pub const META_PREVIOUS_LAST_KEY: &str = "embedstream.previous.last_key";
/// Schema metadata (refresh): XXH3-64 of OLD's IPC footer (schema, metadata
/// and block offsets), 16 hex digits.
pub const META_PREVIOUS_FOOTER_XXH3: &str = "embedstream.previous.footer_xxh3";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_defaults_and_overrides() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            key_field("uuid"),
            Field::new(
                "v",
                DataType::FixedSizeList(Field::new_list_field(DataType::Float32, false).into(), 3),
                false,
            ),
        ]);
        let layout = FileLayout::from_schema(&schema, None).unwrap();
        assert_eq!(
            (layout.key_index, layout.vector_index, layout.vector_dim),
            (1, Some(2), 3)
        );
        assert!(!layout.keys_verified_by_writer);
        let err = FileLayout::from_schema(&schema, Some("id")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the key column `id` is Utf8, expected FixedSizeBinary(16) UUIDs"
        );
        let err = FileLayout::from_schema(&schema, Some("nope")).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("the file has no key column `nope`"));
    }
}
