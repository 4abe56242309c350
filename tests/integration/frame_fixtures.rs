//! Every real-pandas fixture (`tests/fixtures/pandas/<combo>/*.pkl` with a
//! sibling `*.expected.json`, written by `scripts/create_test_data.py`) is
//! converted with `read_pickle` and every value of every column is compared
//! with what pandas itself held.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use arrow_array::{cast::AsArray, types::*, Array, ArrayRef};
use arrow_schema::{DataType, TimeUnit};
use embedstream::frame::{read_pickle, ColumnData, FrameOptions};
use serde_json::Value as J;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pandas")
}

/// (pickle, expected.json) pairs.
fn fixtures() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    let Ok(combos) = std::fs::read_dir(fixture_root()) else {
        return out;
    };
    for combo in combos.flatten() {
        if !combo.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(combo.path()).unwrap().flatten() {
            let p = f.path();
            if p.extension().and_then(|e| e.to_str()) != Some("pkl") {
                continue;
            }
            let json = p.with_extension("expected.json");
            if json.exists() {
                out.push((p, json));
            }
        }
    }
    out.sort();
    out
}

/// Row `i` of an Arrow string-like column.
fn string_at(a: &dyn Array, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Some(a.as_string::<i64>().value(i).to_string()),
        DataType::Utf8View => Some(a.as_string_view().value(i).to_string()),
        t => panic!("not a string column: {t}"),
    }
}

fn int_at(a: &dyn Array, i: usize) -> Option<i128> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i) as i128,
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i) as i128,
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i) as i128,
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i) as i128,
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i) as i128,
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i) as i128,
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i) as i128,
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i) as i128,
        t => panic!("not an integer column: {t}"),
    })
}

fn float_at(a: &dyn Array, i: usize) -> Option<f64> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Float32 => a.as_primitive::<Float32Type>().value(i) as f64,
        DataType::Float64 => a.as_primitive::<Float64Type>().value(i),
        t => panic!("not a float column: {t}"),
    })
}

fn timestamp_ns_at(a: &dyn Array, i: usize) -> Option<i128> {
    if a.is_null(i) {
        return None;
    }
    Some(match a.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            a.as_primitive::<TimestampSecondType>().value(i) as i128 * 1_000_000_000
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            a.as_primitive::<TimestampMillisecondType>().value(i) as i128 * 1_000_000
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            a.as_primitive::<TimestampMicrosecondType>().value(i) as i128 * 1_000
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            a.as_primitive::<TimestampNanosecondType>().value(i) as i128
        }
        t => panic!("not a timestamp column: {t}"),
    })
}

/// Compare one column; returns a description of the first difference.
/// The column as one array, checked to equal the same column built in
/// pieces of 3 rows (the converter builds vector columns batch by batch).
fn column_array(data: &ColumnData) -> Result<ArrayRef, String> {
    let whole = data.to_array().map_err(|e| format!("building: {e}"))?;
    let pieces = (0..data.len())
        .step_by(3)
        .map(|start| data.slice(start, 3))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("building a slice: {e}"))?;
    if !pieces.is_empty() {
        let refs: Vec<&dyn Array> = pieces.iter().map(|p| p.as_ref()).collect();
        let joined = arrow::compute::concat(&refs).map_err(|e| e.to_string())?;
        if joined.to_data() != whole.to_data() {
            return Err("built in pieces of 3 rows it differs from the whole".into());
        }
    }
    Ok(whole)
}

fn compare_column(col: &J, name: &str, a: &ArrayRef, keep64: bool) -> Result<(), String> {
    let kind = col["kind"].as_str().unwrap();
    let values = col["values"].as_array().unwrap();
    if a.len() != values.len() {
        return Err(format!("{} rows, expected {}", a.len(), values.len()));
    }
    for (i, want) in values.iter().enumerate() {
        let ok = match kind {
            "string" => string_at(a, i).as_deref() == want.as_str(),
            "int" | "uint" => {
                int_at(a, i)
                    == want
                        .as_i64()
                        .map(|v| v as i128)
                        .or(want.as_u64().map(|v| v as i128))
            }
            "float" => {
                let got = float_at(a, i);
                match (got, want.as_f64()) {
                    // pandas treats NaN as missing; numeric blocks keep the NaN.
                    (None, None) => true,
                    (Some(g), None) => g.is_nan(),
                    (Some(g), Some(w)) => {
                        if a.data_type() == &DataType::Float32 {
                            g as f32 == w as f32
                        } else {
                            g.to_bits() == w.to_bits()
                                || (g == 0.0
                                    && w == 0.0
                                    && g.is_sign_negative() == w.is_sign_negative())
                        }
                    }
                    (None, Some(_)) => false,
                }
            }
            "bool" => {
                let got = (!a.is_null(i)).then(|| a.as_boolean().value(i));
                got == want.as_bool()
            }
            "category" => {
                let DataType::Dictionary(_, _) = a.data_type() else {
                    return Err(format!("category column is {}", a.data_type()));
                };
                let d = a.as_any_dictionary();
                let got = if a.is_null(i) {
                    None
                } else {
                    let keys = arrow_cast_key(d.keys(), i);
                    Some(value_as_string(d.values(), keys))
                };
                got.as_deref() == want.as_str()
            }
            "datetime" => {
                if let Some(tz) = col.get("tz").and_then(|t| t.as_str()) {
                    match a.data_type() {
                        DataType::Timestamp(_, Some(got)) if got.as_ref() == tz => {}
                        t => return Err(format!("expected tz {tz}, column is {t}")),
                    }
                }
                timestamp_ns_at(a, i) == want.as_i64().map(|v| v as i128)
            }
            "vector" => {
                let DataType::FixedSizeList(item, dim) = a.data_type() else {
                    return Err(format!("vector column is {}", a.data_type()));
                };
                if let Some(d) = col.get("dim").and_then(|d| d.as_u64()) {
                    if *dim as u64 != d {
                        return Err(format!("dim {dim}, expected {d}"));
                    }
                }
                let want_item = if keep64 {
                    DataType::Float64
                } else {
                    DataType::Float32
                };
                if item.data_type() != &want_item {
                    return Err(format!("vector items are {}", item.data_type()));
                }
                if want.is_null() {
                    a.is_null(i)
                } else {
                    let l = a.as_fixed_size_list().value(i);
                    let w = want.as_array().unwrap();
                    l.len() == w.len()
                        && (0..l.len()).all(|k| {
                            let x = w[k].as_f64().unwrap();
                            if keep64 {
                                l.as_primitive::<Float64Type>().value(k).to_bits() == x.to_bits()
                            } else {
                                l.as_primitive::<Float32Type>().value(k) == x as f32
                            }
                        })
                }
            }
            "empty" => true,
            other => return Err(format!("unknown kind {other}")),
        };
        if !ok {
            return Err(format!(
                "row {i}: expected {want}, column is {} (name {name})",
                a.data_type()
            ));
        }
    }
    if kind == "category" {
        let d = a.as_any_dictionary();
        let got: Vec<String> = (0..d.values().len())
            .map(|k| value_as_string(d.values(), k))
            .collect();
        let want: Vec<String> = col["categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        if got != want {
            return Err(format!("categories {got:?}, expected {want:?}"));
        }
    }
    Ok(())
}

fn arrow_cast_key(keys: &dyn Array, i: usize) -> usize {
    int_at(keys, i).unwrap() as usize
}

fn value_as_string(values: &dyn Array, k: usize) -> String {
    match values.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => string_at(values, k).unwrap(),
        DataType::Float32 | DataType::Float64 => {
            let f = float_at(values, k).unwrap();
            if f.fract() == 0.0 && f.abs() < 1e16 {
                format!("{f:.1}")
            } else {
                format!("{f}")
            }
        }
        _ => int_at(values, k).unwrap().to_string(),
    }
}

fn check_fixture(pkl: &Path, json: &Path, keep64: bool) -> Result<(), String> {
    let expected: J = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let options = FrameOptions {
        keep_float64: keep64,
        ..Default::default()
    };
    let result = read_pickle(pkl, &options);
    if let Some(err) = expected["error"].as_str() {
        return match result {
            Ok(_) => Err(format!("converted, but must fail with {err:?}")),
            Err(e) if e.to_string().contains(err) => Ok(()),
            Err(e) => Err(format!(
                "failed with {e}, expected a message containing {err:?}"
            )),
        };
    }
    let frame = result.map_err(|e| format!("failed: {e}"))?;
    let rows = expected["rows"].as_u64().unwrap() as usize;
    if frame.rows != rows {
        return Err(format!("{} rows, expected {rows}", frame.rows));
    }
    let cols = expected["columns"].as_array().unwrap();
    let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
    let got: Vec<&str> = frame.columns.iter().map(|c| c.name.as_str()).collect();
    if names != got {
        return Err(format!("columns {got:?}, expected {names:?}"));
    }
    for (c, col) in cols.iter().zip(&frame.columns) {
        compare_column(c, &col.name, &column_array(&col.data)?, keep64)
            .map_err(|e| format!("column '{}': {e}", col.name))?;
    }
    Ok(())
}

#[test]
fn every_fixture_matches_what_pandas_held() {
    let all = fixtures();
    // The set must not be empty and must cover the version matrix, so this
    // test cannot pass on zero files.
    assert!(
        all.len() >= 100,
        "only {} fixtures found under {}",
        all.len(),
        fixture_root().display()
    );
    let combos: BTreeSet<String> = all
        .iter()
        .map(|(p, _)| {
            p.parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for want in [
        "pandas-1.5.3",
        "pandas-2.1.4",
        "pandas-2.2.3",
        "pandas-3.1.1-pyarrow",
        "pandas-3.1.1-nopyarrow",
    ] {
        assert!(combos.contains(want), "no fixtures for {want}: {combos:?}");
    }
    let names: BTreeSet<String> = all
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for frame in [
        "reference",
        "kitchen_sink",
        "dict_of_lists",
        "list_of_dicts",
        "ragged",
        "empty",
    ] {
        for writer in ["to_pickle", "dump-p2", "dump-p4", "dump-p5"] {
            let f = format!("{frame}.{writer}.pkl");
            assert!(names.contains(&f), "no fixture {f}");
        }
    }
    let mut failures = Vec::new();
    for (pkl, json) in &all {
        if let Err(e) = check_fixture(pkl, json, false) {
            failures.push(format!(
                "{}: {e}",
                pkl.strip_prefix(fixture_root()).unwrap().display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

#[test]
fn reference_fixtures_keep_float64_exactly() {
    let all: Vec<_> = fixtures()
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("reference.")
        })
        .collect();
    assert!(all.len() >= 20);
    let mut failures = Vec::new();
    for (pkl, json) in &all {
        if let Err(e) = check_fixture(pkl, json, true) {
            failures.push(format!("{}: {e}", pkl.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
