//! The data set contract: a directory of ordered shards and its
//! `manifest.json`, written by `convert A.pkl B.pkl … -o DIR/` and read by
//! `serve --data DIR/` and `inspect DIR/`.
//!
//! A data set directory holds:
//! - shard files, each an ordinary embedstream Arrow IPC file (see the parent
//!   module) with strictly increasing keys;
//! - [`MANIFEST_FILE`], the JSON [`Manifest`].
//!
//! Invariants a valid manifest states, checked by [`Manifest::parse`] (the
//! readers then check the shards against it):
//! - every shard with rows has `first_key <= last_key`, and the key ranges of
//!   the shards with rows are disjoint and increasing in manifest order, so
//!   the data set is one strictly increasing key sequence;
//! - a shard of 0 rows has no keys and no record batches;
//! - a shard's `batches` are its record batches in footer order; their rows
//!   add up to the shard's `rows`, and the shards' rows to the manifest's;
//! - `file` is a plain file name inside the directory (no separator, no
//!   `..`), and no two shards name the same file.
//!
//! Checksums, lowercase hex:
//! - `sha256`: SHA-256 of the whole shard file ([`sha256_hex`]), what
//!   `inspect --verify` checks and what a copy is compared with;
//! - `dictionaries` and `batches[].xxh3`: XXH3-128 of each IPC block
//!   ([`block_checksum`]; the block's bytes as the footer locates them,
//!   metadata and body), which a server checks lazily, the first time it
//!   serves a block, so that start-up never reads more than the key column.
//!
//! The per-block sums guard against damage (a bad copy, a truncated or
//! rewritten file, bit rot), not against an adversary: the manifest that
//! lists them is not signed, so a cryptographic hash per block would add no
//! protection. XXH3 runs at memory speed, where SHA-256 (with SHA-NI) took
//! 35% of a data set conversion's CPU (BENCHMARKS.md, shards) and a first
//! read's.

use std::path::Path;

use arrow_schema::Schema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name inside a data set directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The manifest's `format` value.
pub const MANIFEST_FORMAT: &str = "embedstream.dataset";
/// The manifest format version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest accepted (bytes): a budget for reading it. 100 shards of
/// 1,000 batches take about 8 MiB.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024 * 1024;

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// [`MANIFEST_VERSION`] for this build.
    pub format_version: u32,
    /// The key column every shard is keyed by.
    pub key_column: String,
    /// Every shard's schema (fields only; schema metadata may differ per shard).
    pub schema: Vec<FieldEntry>,
    /// Total rows over every shard.
    pub rows: u64,
    /// The shards, in key order.
    pub shards: Vec<ShardEntry>,
}

/// One field of the shared schema, as [`schema_entries`] renders it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldEntry {
    /// Column name.
    pub name: String,
    /// Arrow data type, as `DataType`'s `Display` writes it.
    pub data_type: String,
    /// Whether the field is nullable.
    pub nullable: bool,
}

/// One shard of a data set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the directory.
    pub file: String,
    /// Rows in the shard.
    pub rows: u64,
    /// Its first key, hyphenated (absent for a shard of 0 rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_key: Option<String>,
    /// Its last key, hyphenated (absent for a shard of 0 rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<String>,
    /// The file's size in bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file.
    pub sha256: String,
    /// XXH3-128 of each dictionary block, in footer order ([`block_checksum`]).
    #[serde(default)]
    pub dictionaries: Vec<String>,
    /// Each record batch, in footer order.
    pub batches: Vec<BatchEntry>,
}

/// One record batch of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchEntry {
    /// Rows in the batch.
    pub rows: u64,
    /// XXH3-128 of the block's bytes, metadata and body ([`block_checksum`]).
    pub xxh3: String,
}

/// Why a manifest is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ManifestError {
    /// The manifest (or the shard) the error is about.
    pub path: String,
    /// What is wrong, naming the shard.
    pub reason: String,
}

impl ShardEntry {
    /// How errors name this shard: `shard N (FILE)`.
    pub fn label(&self, index: usize) -> String {
        format!("shard {index} ({})", self.file)
    }

    /// First and last key as bytes, if the shard has rows and the keys parse.
    pub fn key_range(&self) -> Option<([u8; 16], [u8; 16])> {
        let parse = |k: &Option<String>| {
            k.as_deref()
                .and_then(|s| uuid::Uuid::try_parse(s).ok())
                .map(|u| *u.as_bytes())
        };
        Some((parse(&self.first_key)?, parse(&self.last_key)?))
    }
}

impl Manifest {
    /// Read and check `DIR/manifest.json` ([`Manifest::parse`]).
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let shown = path.display().to_string();
        let error = |reason: String| ManifestError {
            path: shown.clone(),
            reason,
        };
        let file = std::fs::File::open(&path).map_err(|e| {
            error(if e.kind() == std::io::ErrorKind::NotFound {
                format!("no such file; `{}` is not an embedstream data set (`embedstream convert A.pkl B.pkl -o DIR/` makes one)", dir.display())
            } else {
                e.to_string()
            })
        })?;
        let len = file.metadata().map_err(|e| error(e.to_string()))?.len();
        if len > MAX_MANIFEST_BYTES {
            return Err(error(format!(
                "{len} bytes is over the {MAX_MANIFEST_BYTES}-byte limit of a manifest"
            )));
        }
        let mut text = Vec::with_capacity(len as usize);
        use std::io::Read;
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| error(e.to_string()))?;
        Manifest::parse(&text).map_err(error)
    }

    /// Parse manifest JSON and check the invariants of the module
    /// documentation; the error names the shard.
    pub fn parse(text: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_slice(text).map_err(|e| format!("not a data set manifest: {e}"))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// The invariants of the module documentation.
    pub fn check(&self) -> Result<(), String> {
        if self.format != MANIFEST_FORMAT {
            return Err(format!(
                "format `{}` is not `{MANIFEST_FORMAT}`",
                self.format.chars().take(64).collect::<String>()
            ));
        }
        if self.format_version != MANIFEST_VERSION {
            return Err(format!(
                "format_version {} is not supported by this embedstream (it reads version {MANIFEST_VERSION}); use the embedstream that wrote it",
                self.format_version
            ));
        }
        let mut total = 0u64;
        let mut previous: Option<(usize, [u8; 16])> = None;
        let mut names = std::collections::HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let label = shard.label(i);
            if !is_plain_file_name(&shard.file) {
                return Err(format!(
                    "shard {i}: file `{}` is not a plain file name inside the data set directory",
                    shard.file.chars().take(64).collect::<String>()
                ));
            }
            if !names.insert(shard.file.as_str()) {
                return Err(format!("{label}: the file is listed twice"));
            }
            let batch_rows = shard
                .batches
                .iter()
                .try_fold(0u64, |sum, b| sum.checked_add(b.rows));
            if batch_rows != Some(shard.rows) {
                return Err(format!(
                    "{label}: its batches hold {} rows, not the {} it lists",
                    batch_rows.map_or_else(|| "too many".to_string(), |r| r.to_string()),
                    shard.rows
                ));
            }
            for digest in shard
                .dictionaries
                .iter()
                .chain(shard.batches.iter().map(|b| &b.xxh3))
            {
                if !is_hex(digest, BLOCK_CHECKSUM_HEX) {
                    return Err(format!(
                        "{label}: block checksum `{}` is not an XXH3-128 in lowercase hex",
                        digest.chars().take(80).collect::<String>()
                    ));
                }
            }
            if !is_hex(&shard.sha256, 64) {
                return Err(format!(
                    "{label}: sha256 `{}` is not a SHA-256 in lowercase hex",
                    shard.sha256.chars().take(80).collect::<String>()
                ));
            }
            total = total
                .checked_add(shard.rows)
                .ok_or_else(|| format!("{label}: the row count overflows"))?;
            if shard.rows == 0 {
                if shard.first_key.is_some() || shard.last_key.is_some() {
                    return Err(format!("{label}: a shard of 0 rows lists keys"));
                }
                continue;
            }
            let Some((first, last)) = shard.key_range() else {
                return Err(format!(
                    "{label}: first_key and last_key must be hyphenated UUIDs"
                ));
            };
            if first > last {
                return Err(format!(
                    "{label}: first_key {} is after last_key {}",
                    super::format_uuid(&first),
                    super::format_uuid(&last)
                ));
            }
            if let Some((p, prev_last)) = previous {
                if first <= prev_last {
                    return Err(format!(
                        "{label}: its keys overlap or precede those of {} (its first key {} is not after {})",
                        self.shards[p].label(p),
                        super::format_uuid(&first),
                        super::format_uuid(&prev_last)
                    ));
                }
            }
            previous = Some((i, last));
        }
        if total != self.rows {
            return Err(format!(
                "the shards hold {total} rows, not the {} the manifest lists",
                self.rows
            ));
        }
        Ok(())
    }

    /// The manifest as written: pretty JSON and a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        text.push('\n');
        text
    }
}

/// The schema as the manifest records it.
pub fn schema_entries(schema: &Schema) -> Vec<FieldEntry> {
    schema
        .fields()
        .iter()
        .map(|f| FieldEntry {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// Hex digits of a block checksum.
const BLOCK_CHECKSUM_HEX: usize = 32;

/// The checksum of one IPC block: XXH3-128 of its bytes, lowercase hex
/// (32 digits). The one definition the writer, the server and `inspect`
/// use.
pub fn block_checksum(bytes: &[u8]) -> String {
    hex(&twox_hash::XxHash3_128::oneshot(bytes).to_be_bytes())
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn is_hex(s: &str, digits: usize) -> bool {
    s.len() == digits && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name != MANIFEST_FILE
        && !name.contains(['/', '\\', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        super::super::format_uuid(&[n; 16])
    }

    fn shard(file: &str, rows: u64, keys: Option<(u8, u8)>) -> ShardEntry {
        ShardEntry {
            file: file.into(),
            rows,
            first_key: keys.map(|k| key(k.0)),
            last_key: keys.map(|k| key(k.1)),
            bytes: 10,
            sha256: sha256_hex(b"file"),
            dictionaries: vec![],
            batches: if rows == 0 {
                vec![]
            } else {
                vec![BatchEntry {
                    rows,
                    xxh3: block_checksum(b"batch"),
                }]
            },
        }
    }

    fn manifest(shards: Vec<ShardEntry>) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            format_version: MANIFEST_VERSION,
            key_column: "uuid".into(),
            schema: vec![],
            rows: shards.iter().map(|s| s.rows).sum(),
            shards,
        }
    }

    #[test]
    fn a_valid_manifest_round_trips() {
        let m = manifest(vec![
            shard("a.arrow", 3, Some((1, 2))),
            shard("empty.arrow", 0, None),
            shard("b.arrow", 1, Some((3, 3))),
        ]);
        assert_eq!(Manifest::parse(m.to_json().as_bytes()).unwrap(), m);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // XXH3-128 of the empty input, as the reference implementation gives it.
        assert_eq!(block_checksum(b""), "99aa06d3014798d86001c324468d497f");
        assert_eq!(block_checksum(b"abc").len(), 32);
    }

    #[test]
    fn every_broken_invariant_is_named() {
        let check = |m: Manifest| m.check().unwrap_err();
        let overlap = manifest(vec![
            shard("a.arrow", 3, Some((1, 5))),
            shard("b.arrow", 1, Some((5, 6))),
        ]);
        assert!(check(overlap).starts_with(
            "shard 1 (b.arrow): its keys overlap or precede those of shard 0 (a.arrow)"
        ));
        let backwards = manifest(vec![shard("a.arrow", 3, Some((5, 1)))]);
        assert!(check(backwards).starts_with("shard 0 (a.arrow): first_key "));
        let mut rows = manifest(vec![shard("a.arrow", 3, Some((1, 2)))]);
        rows.rows = 4;
        assert_eq!(
            check(rows),
            "the shards hold 3 rows, not the 4 the manifest lists"
        );
        let mut batches = manifest(vec![shard("a.arrow", 3, Some((1, 2)))]);
        batches.shards[0].rows = 2;
        batches.rows = 2;
        assert_eq!(
            check(batches),
            "shard 0 (a.arrow): its batches hold 3 rows, not the 2 it lists"
        );
        let escape = manifest(vec![shard("../x.arrow", 3, Some((1, 2)))]);
        assert_eq!(
            check(escape),
            "shard 0: file `../x.arrow` is not a plain file name inside the data set directory"
        );
        let twice = manifest(vec![
            shard("a.arrow", 3, Some((1, 2))),
            shard("a.arrow", 3, Some((3, 4))),
        ]);
        assert_eq!(check(twice), "shard 1 (a.arrow): the file is listed twice");
        let empty_with_keys = manifest(vec![shard("a.arrow", 0, Some((1, 2)))]);
        assert_eq!(
            check(empty_with_keys),
            "shard 0 (a.arrow): a shard of 0 rows lists keys"
        );
        let mut digest = manifest(vec![shard("a.arrow", 3, Some((1, 2)))]);
        digest.shards[0].sha256 = "XYZ".into();
        assert_eq!(
            check(digest),
            "shard 0 (a.arrow): sha256 `XYZ` is not a SHA-256 in lowercase hex"
        );
        let mut block = manifest(vec![shard("a.arrow", 3, Some((1, 2)))]);
        block.shards[0].batches[0].xxh3 = sha256_hex(b"not this algorithm");
        assert!(check(block).starts_with("shard 0 (a.arrow): block checksum `"));
        let mut version = manifest(vec![]);
        version.format_version = 9;
        assert!(check(version).starts_with("format_version 9 is not supported"));
        assert!(Manifest::parse(b"{}")
            .unwrap_err()
            .starts_with("not a data set manifest: missing field"));
    }
}
