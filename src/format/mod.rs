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
//!
//! Several such files with disjoint, ordered key ranges make a data set
//! directory, described by its `manifest.json`: see [`manifest`].

pub mod manifest;

use std::collections::HashMap;

use arrow_schema::{DataType, Field, Metadata, Schema};

/// Default name of the key column added by `convert`.
pub const DEFAULT_KEY_COLUMN: &str = "uuid";

/// The reference pickle's column feeding `RecruitRow.company_name` (the default mapping).
pub const DEFAULT_COMPANY_NAME_COLUMN: &str = "Company Name";
/// The reference pickle's column feeding `RecruitRow.exp_years`.
pub const DEFAULT_EXP_YEARS_COLUMN: &str = "Exp Years";
/// The reference pickle's column feeding `RecruitRow.english_level`.
pub const DEFAULT_ENGLISH_LEVEL_COLUMN: &str = "English Level";
/// The reference pickle's column feeding `RecruitRow.primary_keyword`.
pub const DEFAULT_PRIMARY_KEYWORD_COLUMN: &str = "Primary Keyword";
/// The reference pickle's vector column (`RecruitRow.vector`); also the
/// vector column of files written by `stream --out`.
pub const DEFAULT_VECTOR_COLUMN: &str = "job_post_vectors";

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

/// A key as stored: 16 big-endian UUID bytes.
pub type Key = [u8; 16];

/// Two keys that break the order rule: the key at `row` is not greater
/// than the one before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not strictly increasing at row {row} ({previous} then {next})")]
pub struct OutOfOrder {
    /// Row number of the offending key (numbered as the caller counts rows).
    pub row: usize,
    /// The key before it, hyphenated.
    pub previous: String,
    /// The offending key, hyphenated.
    pub next: String,
}

/// The key order rule, the one definition every writer and reader checks:
/// each key is strictly greater than the previous one, compared bytewise
/// (for UUID v7: time, then counter, then random bits). `row` is the number
/// of the row holding `next`, reported in the error.
pub fn check_key_order(row: usize, previous: &[u8], next: &[u8]) -> Result<(), OutOfOrder> {
    if previous < next {
        Ok(())
    } else {
        Err(OutOfOrder {
            row,
            previous: format_uuid(previous),
            next: format_uuid(next),
        })
    }
}

/// Whether 16 key bytes are an RFC 9562 version 7 UUID (version nibble 7,
/// variant `10`): the only keys `convert` writes or adopts.
pub fn is_v7(key: &[u8]) -> bool {
    uuid::Uuid::from_slice(key).is_ok_and(|id| {
        id.get_version() == Some(uuid::Version::SortRand)
            && id.get_variant() == uuid::Variant::RFC4122
    })
}

/// The `embedstream.*` schema metadata: built by every writer (`convert`,
/// `stream --out`) and parsed by every reader ([`FileLayout`], `inspect`).
/// Absent or unparsable entries read as `None` (`false` for `keys_sorted`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMetadata {
    /// [`META_KEY_COLUMN`].
    pub key_column: Option<String>,
    /// [`META_VECTOR_COLUMN`].
    pub vector_column: Option<String>,
    /// [`META_VECTOR_DIM`].
    pub vector_dim: Option<usize>,
    /// [`META_ROWS`].
    pub rows: Option<usize>,
    /// [`META_SOURCE`].
    pub source: Option<String>,
    /// [`META_VERSION`].
    pub version: Option<String>,
    /// [`META_KEYS_SORTED`]: the writer checked that keys are strictly increasing.
    pub keys_sorted: bool,
    /// [`META_GENERATION`]: 1 for a plain conversion, OLD's + 1 for a refresh.
    pub generation: Option<u64>,
}

impl FileMetadata {
    /// What this build of embedstream records for a file keyed by
    /// `key_column` whose key order it checked (every writer does).
    pub fn written(key_column: &str) -> Self {
        FileMetadata {
            key_column: Some(key_column.to_string()),
            version: Some(env!("CARGO_PKG_VERSION").to_string()),
            keys_sorted: true,
            generation: Some(1),
            ..FileMetadata::default()
        }
    }

    /// Record the vector column and its dimension.
    pub fn with_vector(mut self, column: &str, dim: usize) -> Self {
        self.vector_column = Some(column.to_string());
        self.vector_dim = Some(dim);
        self
    }

    /// Parse the entries of a schema's metadata.
    pub fn read(metadata: &Metadata) -> Self {
        let text = |key: &str| metadata.get(key).cloned();
        let number = |key: &str| metadata.get(key).and_then(|v| v.parse().ok());
        FileMetadata {
            key_column: text(META_KEY_COLUMN),
            vector_column: text(META_VECTOR_COLUMN),
            vector_dim: number(META_VECTOR_DIM),
            rows: number(META_ROWS),
            source: text(META_SOURCE),
            version: text(META_VERSION),
            keys_sorted: metadata.get(META_KEYS_SORTED).map(String::as_str) == Some("true"),
            generation: metadata.get(META_GENERATION).and_then(|v| v.parse().ok()),
        }
    }

    /// The entries to write into a schema's metadata (absent fields are
    /// left out, `keys_sorted` is written only when true).
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::new();
        let mut put = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                map.insert(key.to_string(), value);
            }
        };
        put(META_KEY_COLUMN, self.key_column.clone());
        put(META_VECTOR_COLUMN, self.vector_column.clone());
        put(META_VECTOR_DIM, self.vector_dim.map(|d| d.to_string()));
        put(META_ROWS, self.rows.map(|r| r.to_string()));
        put(META_SOURCE, self.source.clone());
        put(META_VERSION, self.version.clone());
        put(
            META_KEYS_SORTED,
            self.keys_sorted.then(|| "true".to_string()),
        );
        put(META_GENERATION, self.generation.map(|g| g.to_string()));
        map
    }
}

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
        let meta = FileMetadata::read(schema.metadata());
        let key_name = key_override
            .or(meta.key_column.as_deref())
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
        let vector_index = match &meta.vector_column {
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
            keys_verified_by_writer: meta.keys_sorted,
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
    fn key_order_and_version() {
        let a = [1u8; 16];
        let mut b = a;
        b[15] = 2;
        assert!(check_key_order(1, &a, &b).is_ok());
        let err = check_key_order(7, &b, &a).unwrap_err();
        assert_eq!(err.row, 7);
        assert_eq!(
            err.to_string(),
            "not strictly increasing at row 7 (01010101-0101-0101-0101-010101010102 then 01010101-0101-0101-0101-010101010101)"
        );
        assert!(check_key_order(0, &a, &a).is_err());
        let v7 = uuid::Uuid::now_v7();
        assert!(is_v7(v7.as_bytes()));
        assert!(!is_v7(
            &0xb1a0c3f2_57d1_4f0e_9a3c_2b5d1e0f9a11u128.to_be_bytes()
        ));
        let mut wrong_variant = *v7.as_bytes();
        wrong_variant[8] &= 0x3f;
        assert!(!is_v7(&wrong_variant));
        assert!(!is_v7(&[7u8; 15]));
    }

    #[test]
    fn metadata_round_trips() {
        let mut written = FileMetadata::written("uuid").with_vector("v", 8);
        written.rows = Some(12);
        written.source = Some("x.pkl".into());
        let map = written.to_map();
        assert_eq!(map[META_KEYS_SORTED], "true");
        assert_eq!(map[META_VECTOR_DIM], "8");
        assert_eq!(map[META_VERSION], env!("CARGO_PKG_VERSION"));
        assert_eq!(FileMetadata::read(&Metadata::from(map)), written);
        let empty = FileMetadata::read(&Metadata::default());
        assert_eq!(empty, FileMetadata::default());
        assert!(empty.to_map().is_empty());
    }

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
