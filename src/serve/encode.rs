//! Hand-written protobuf encoding of `RowChunk` straight from the mapped file.
//!
//! A chunk is described by a [`ChunkPlan`] (a row range of one snapshot of
//! the served [`Dataset`]); [`encode_chunk`] writes it directly into the
//! chunk's output buffer ([`super::row_body`] sizes and budgets it): field tags, varint lengths, the 36 id
//! characters, the strings, and the vector bytes of each row copied once from
//! the map into the packed `repeated float` field. No prost structs, no
//! per-row `Vec<f32>`. Values equal to the proto3 default (empty string, 0,
//! empty vector) are omitted, exactly as prost does, so the bytes are the
//! same as `prost::Message::encode` of the equivalent `RowChunk`.

use std::sync::Arc;

use bytes::BufMut;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::{
    dataset::Dataset,
    rows::{RecruitColumns, RecruitTable, VectorRef},
    store::BatchError,
    wire::ID_LEN,
};

/// Wire type 2 (length-delimited) tags of the fields we write.
const TAG_CHUNK_ROWS: u8 = (1 << 3) | 2;
const TAG_ID: u8 = (1 << 3) | 2;
const TAG_COMPANY: u8 = (2 << 3) | 2;
const TAG_EXP: u8 = 3 << 3; // varint
const TAG_ENGLISH: u8 = (4 << 3) | 2;
const TAG_KEYWORD: u8 = (5 << 3) | 2;
const TAG_VECTOR: u8 = (6 << 3) | 2;

/// Length of the `RecruitRow` message of row `i` (without its own tag/length).
fn row_body_len(c: &RecruitColumns, i: usize) -> usize {
    let string = |s: &str| {
        if s.is_empty() {
            0
        } else {
            1 + encoded_len_varint(s.len() as u64) + s.len()
        }
    };
    let exp = c.exp_years(i);
    let exp_len = if exp == 0 {
        0
    } else {
        1 + encoded_len_varint(exp as i64 as u64)
    };
    let vector_bytes = c.vector(i).len() * 4;
    let vector_len = if vector_bytes == 0 {
        0
    } else {
        1 + encoded_len_varint(vector_bytes as u64) + vector_bytes
    };
    let id_len = if c.key(i).len() == 16 {
        1 + 1 + ID_LEN
    } else {
        0
    };
    id_len
        + string(c.company_name(i))
        + exp_len
        + string(c.english_level(i))
        + string(c.primary_keyword(i))
        + vector_len
}

/// Encoded size of the `RowChunk` holding global rows `start..end`, summed
/// independently of [`encode_chunk`] (the tests check the two agree); an
/// error if a batch they fall in cannot be decoded.
#[cfg(test)]
fn chunk_len(table: &RecruitTable, start: usize, end: usize) -> Result<usize, BatchError> {
    let mut total = 0;
    table.for_segments(start, end, |c, a, b| {
        for i in a..b {
            let body = row_body_len(c, i);
            total += 1 + encoded_len_varint(body as u64) + body;
        }
    })?;
    Ok(total)
}

/// Write the `RowChunk` holding global rows `start..end` into `dst`; the
/// bytes written. On an error (a batch that cannot be decoded) `dst` holds
/// a partial chunk.
pub fn encode_chunk(
    table: &RecruitTable,
    start: usize,
    end: usize,
    dst: &mut impl BufMut,
) -> Result<usize, BatchError> {
    let mut written = 0;
    table.for_segments(start, end, |c, a, b| {
        for i in a..b {
            written += encode_row(c, i, dst);
        }
    })?;
    Ok(written)
}

/// Write row `i` as one `RowChunk.rows` entry (tag, length, `RecruitRow`);
/// the bytes written.
fn encode_row(c: &RecruitColumns, i: usize, dst: &mut impl BufMut) -> usize {
    let body = row_body_len(c, i);
    dst.put_u8(TAG_CHUNK_ROWS);
    encode_varint(body as u64, dst);
    if c.key(i).len() == 16 {
        let mut id = [0u8; ID_LEN];
        c.id_str(i, &mut id);
        dst.put_u8(TAG_ID);
        dst.put_u8(ID_LEN as u8);
        dst.put_slice(&id);
    }
    put_string(dst, TAG_COMPANY, c.company_name(i));
    let exp = c.exp_years(i);
    if exp != 0 {
        dst.put_u8(TAG_EXP);
        // proto3 int32: negative values are sign-extended to 64 bits.
        encode_varint(exp as i64 as u64, dst);
    }
    put_string(dst, TAG_ENGLISH, c.english_level(i));
    put_string(dst, TAG_KEYWORD, c.primary_keyword(i));
    let vector = c.vector(i);
    if !vector.is_empty() {
        dst.put_u8(TAG_VECTOR);
        encode_varint((vector.len() * 4) as u64, dst);
        match vector.as_le_bytes() {
            // The one copy: map → output buffer.
            Some(bytes) => dst.put_slice(bytes),
            None => match vector {
                VectorRef::F32(v) => v.iter().for_each(|&x| dst.put_f32_le(x)),
                VectorRef::F64(v) => v.iter().for_each(|&x| dst.put_f32_le(x as f32)),
            },
        }
    }
    1 + encoded_len_varint(body as u64) + body
}

fn put_string(dst: &mut impl BufMut, tag: u8, s: &str) {
    if !s.is_empty() {
        dst.put_u8(tag);
        encode_varint(s.len() as u64, dst);
        dst.put_slice(s.as_bytes());
    }
}

/// One `RowChunk` to send: global rows `start..end` of one generation of the
/// data set. Cheap to create; encoded only when tonic polls the response body.
#[derive(Debug, Clone)]
pub struct ChunkPlan {
    /// The snapshot of the data set the stream reads.
    pub dataset: Arc<Dataset>,
    /// First global row.
    pub start: usize,
    /// One past the last global row.
    pub end: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{format, proto::RowChunk, rows::RowMapping};
    use arrow_array::{
        builder::{FixedSizeBinaryBuilder, FixedSizeListBuilder, Float32Builder, Float64Builder},
        ArrayRef, Int32Array, RecordBatch, StringArray,
    };
    use arrow_ipc::writer::FileWriter;
    use arrow_schema::{DataType, Field, Schema};
    use prost::Message;

    /// Write a two-batch file; vectors in f64 when `wide`, exp as ints when `ints`.
    fn table(wide: bool, ints: bool) -> (tempfile::TempDir, Arc<RecruitTable>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.arrow");
        let item = if wide {
            DataType::Float64
        } else {
            DataType::Float32
        };
        let vtype = DataType::FixedSizeList(Arc::new(Field::new_list_field(item, false)), 3);
        let exp_type = if ints {
            DataType::Int32
        } else {
            DataType::Utf8
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("Company Name", DataType::Utf8, true),
            Field::new("Exp Years", exp_type, true),
            Field::new("English Level", DataType::Utf8, true),
            Field::new("Primary Keyword", DataType::Utf8, true),
            Field::new("vec", vtype, true),
            format::key_field("uuid"),
        ]));
        let batches = [(0usize, 3usize), (3, 2)].into_iter().map(|(b, rows)| {
            let range = b..b + rows;
            let mut keys = FixedSizeBinaryBuilder::new(16);
            let vectors: ArrayRef = if wide {
                let mut v = FixedSizeListBuilder::new(Float64Builder::new(), 3)
                    .with_field(Arc::new(Field::new_list_field(DataType::Float64, false)));
                for i in range.clone() {
                    v.values().append_slice(&[i as f64 + 0.1, -1.0, 1e300]);
                    v.append(i != 1);
                }
                Arc::new(v.finish())
            } else {
                let mut v = FixedSizeListBuilder::new(Float32Builder::new(), 3)
                    .with_field(Arc::new(Field::new_list_field(DataType::Float32, false)));
                for i in range.clone() {
                    v.values()
                        .append_slice(&[i as f32 + 0.5, -0.0, f32::MIN_POSITIVE]);
                    v.append(i != 1);
                }
                Arc::new(v.finish())
            };
            for i in range.clone() {
                let mut k = [0u8; 16];
                k[15] = i as u8 + 1;
                keys.append_value(k).unwrap();
            }
            let exp: ArrayRef = if ints {
                Arc::new(Int32Array::from_iter(
                    range.clone().map(|i| Some(i as i32 - 2)),
                ))
            } else {
                Arc::new(StringArray::from_iter(
                    range.clone().map(|i| (i != 2).then(|| format!("{i}y"))),
                ))
            };
            let text = |p: &str| -> ArrayRef {
                Arc::new(StringArray::from_iter(
                    range
                        .clone()
                        .map(|i| (i != 3).then(|| format!("{p} ✓ {i}"))),
                ))
            };
            vec![
                text("Co"),
                exp,
                text("lvl"),
                text("kw"),
                vectors,
                Arc::new(keys.finish()),
            ]
        });
        let table = write_and_open(&path, &schema, batches);
        (dir, Arc::new(table))
    }

    /// Write `batches` (columns under `schema`) as an Arrow IPC file at
    /// `path`, then open it as a table under the default mapping.
    fn write_and_open(
        path: &std::path::Path,
        schema: &arrow_schema::SchemaRef,
        batches: impl IntoIterator<Item = Vec<ArrayRef>>,
    ) -> RecruitTable {
        let mut w = FileWriter::try_new(std::fs::File::create(path).unwrap(), schema).unwrap();
        for columns in batches {
            w.write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
                .unwrap();
        }
        w.finish().unwrap();
        let store = Arc::new(crate::store::Store::open(path, None).unwrap());
        let layout = RowMapping::default()
            .resolve(store.schema(), store.layout())
            .unwrap();
        RecruitTable::new(store, layout)
    }

    /// The `RecruitRow` prost would encode for row `i`, every field named
    /// (no `..Default`: a field added to the proto stops this compiling).
    fn recruit_row(c: &RecruitColumns, i: usize) -> crate::proto::RecruitRow {
        crate::proto::RecruitRow {
            id: c.id(i).to_string(),
            company_name: c.company_name(i).to_string(),
            exp_years: c.exp_years(i),
            english_level: c.english_level(i).to_string(),
            primary_keyword: c.primary_keyword(i).to_string(),
            vector: c.vector(i).iter().collect(),
        }
    }

    /// The chunk prost would produce, built field by field from the views.
    fn expected(t: &RecruitTable, start: usize, end: usize) -> RowChunk {
        let mut rows = Vec::new();
        t.for_segments(start, end, |c, a, b| {
            rows.extend((a..b).map(|i| recruit_row(c, i)));
        })
        .unwrap();
        RowChunk { rows }
    }

    #[test]
    fn bytes_equal_prost_for_every_range() {
        for (wide, ints) in [(false, false), (true, true), (false, true)] {
            let (_dir, t) = table(wide, ints);
            for start in 0..=5 {
                for end in start..=6 {
                    let mut buf = bytes::BytesMut::new();
                    let written = encode_chunk(&t, start, end, &mut buf).unwrap();
                    assert_eq!(buf.len(), written);
                    assert_eq!(buf.len(), chunk_len(&t, start, end).unwrap());
                    let want = expected(&t, start, end);
                    assert_eq!(want.rows.len(), end.min(5) - start);
                    // Same bytes as prost, and prost decodes ours to the same message.
                    assert_eq!(&buf[..], &want.encode_to_vec()[..], "{start}..{end}");
                    assert_eq!(RowChunk::decode(&buf[..]).unwrap(), want);
                }
            }
        }
    }

    /// Fails when a `RecruitRow` field is added to the proto but not to the
    /// encoder: the expected row names every field ([`recruit_row`]: no
    /// `..Default`, so a new field stops this compiling until it is added
    /// there, and to the non-default check below), and every
    /// row compared has a non-default value in every field (so a field the
    /// encoder leaves out changes the bytes, where prost's equality on
    /// default-valued rows could not see it).
    #[test]
    fn every_field_matches_prost() {
        // (vectors f64, exp as ints, rows whose every field is non-default)
        for (wide, ints, rows) in [
            (false, false, vec![4]),
            (true, true, vec![0, 4]),
            (false, true, vec![0, 4]),
        ] {
            let (_dir, t) = table(wide, ints);
            for row in rows {
                let want = expected(&t, row, row + 1).rows;
                let r = &want[0];
                let default = crate::proto::RecruitRow::default();
                assert!(
                    r.id != default.id
                        && r.company_name != default.company_name
                        && r.exp_years != default.exp_years
                        && r.english_level != default.english_level
                        && r.primary_keyword != default.primary_keyword
                        && r.vector != default.vector,
                    "row {row} of ({wide}, {ints}) leaves a field at its default: {r:?}"
                );
                let mut buf = bytes::BytesMut::new();
                encode_chunk(&t, row, row + 1, &mut buf).unwrap();
                assert_eq!(&buf[..], &RowChunk { rows: want }.encode_to_vec()[..]);
            }
        }
    }

    #[test]
    fn decoded_values_are_the_files() {
        let (_dir, t) = table(true, true);
        let mut buf = bytes::BytesMut::new();
        encode_chunk(&t, 0, 5, &mut buf).unwrap();
        let chunk = RowChunk::decode(&buf[..]).unwrap();
        let r0 = &chunk.rows[0];
        assert_eq!(r0.id, "00000000-0000-0000-0000-000000000001");
        assert_eq!(r0.exp_years, -2);
        assert_eq!(r0.company_name, "Co ✓ 0");
        assert_eq!(r0.vector, vec![0.1f32, -1.0, f32::INFINITY]);
        assert!(chunk.rows[1].vector.is_empty());
        assert_eq!(chunk.rows[3].company_name, "");
        assert_eq!(chunk.rows[4].id, "00000000-0000-0000-0000-000000000005");
    }

    #[test]
    fn row_bound_covers_rows() {
        let (_dir, t) = table(false, false);
        for i in 0..5 {
            assert!(
                chunk_len(&t, i, i + 1).unwrap()
                    <= crate::wire::row_size_bound(t.layout().vector_dim(), 16)
            );
        }
    }

    /// A measurement, not a check: encoding every 300-row chunk of a
    /// 141,897 × 384 Float32 file (the benchmark's size, reference layout,
    /// Utf8 strings). Run by hand, in release:
    /// `cargo test --release --lib encode_every_chunk_timing -- --ignored --nocapture`
    #[test]
    #[ignore = "a timing to read by hand, in release; never a threshold"]
    fn encode_every_chunk_timing() {
        const ROWS: usize = 141_897;
        const DIM: i32 = 384;
        const BATCH: usize = 16_384;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("timing.arrow");
        let item = Arc::new(Field::new_list_field(DataType::Float32, false));
        let schema = Arc::new(Schema::new(vec![
            format::key_field("uuid"),
            Field::new("Company Name", DataType::Utf8, true),
            Field::new("Exp Years", DataType::Utf8, true),
            Field::new("English Level", DataType::Utf8, true),
            Field::new("Primary Keyword", DataType::Utf8, true),
            Field::new("v", DataType::FixedSizeList(item.clone(), DIM), false),
        ]));
        let batches = (0..ROWS).step_by(BATCH).map(|start| {
            let range = start..(start + BATCH).min(ROWS);
            let mut keys = FixedSizeBinaryBuilder::new(16);
            let mut v =
                FixedSizeListBuilder::new(Float32Builder::new(), DIM).with_field(item.clone());
            for i in range.clone() {
                keys.append_value((i as u128 + 1).to_be_bytes()).unwrap();
                v.values().append_slice(
                    &(0..DIM)
                        .map(|j| i as f32 + j as f32 / 7.0)
                        .collect::<Vec<_>>(),
                );
                v.append(true);
            }
            let text = |f: &dyn Fn(usize) -> String| -> ArrayRef {
                Arc::new(StringArray::from_iter_values(range.clone().map(f)))
            };
            vec![
                Arc::new(keys.finish()) as ArrayRef,
                text(&|i| format!("Company {}", i % 997)),
                text(&|i| format!("{}y", i % 11)),
                text(&|i| ["pre", "intermediate", "upper", "fluent"][i % 4].to_string()),
                text(&|i| ["Java", "Python", "Rust", "Go", "QA"][i % 5].to_string()),
                Arc::new(v.finish()),
            ]
        });
        let t = write_and_open(&path, &schema, batches);
        let mut buf = bytes::BytesMut::with_capacity(1 << 20);
        let mut pass = || {
            let began = std::time::Instant::now();
            let mut bytes = 0;
            for start in (0..ROWS).step_by(crate::wire::DEFAULT_CHUNK_SIZE) {
                buf.clear();
                bytes += encode_chunk(&t, start, start + crate::wire::DEFAULT_CHUNK_SIZE, &mut buf)
                    .unwrap();
            }
            (began.elapsed(), bytes)
        };
        pass(); // decodes and caches every batch
        for run in 1..=5 {
            let (elapsed, bytes) = pass();
            println!(
                "encode_every_chunk run {run}: {:.1} ms, {bytes} bytes, {:.0} MB/s",
                elapsed.as_secs_f64() * 1e3,
                bytes as f64 / 1e6 / elapsed.as_secs_f64()
            );
        }
    }
}
