//! The JSON of an `IngestDataStream` data chunk, written straight into a
//! buffer: an array of objects keyed by the RecruitRow field names.
//!
//! Floats are written with `ryu`'s shortest representation of the *f32*
//! value, so each parses back to exactly the same f32 (what the Batch Server
//! stores) without the 17-digit noise of printing it as f64.

use std::io::Write;

/// Why a row cannot be written as JSON.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JsonError {
    /// JSON has no NaN or infinity.
    #[error("row {row} ({id}): vector component {component} is {value}, which JSON cannot carry; fix the source data and convert again")]
    NonFinite {
        /// Global row number.
        row: usize,
        /// The row's id.
        id: String,
        /// Index within the vector.
        component: usize,
        /// The value (NaN or ±inf).
        value: f32,
    },
}

/// One row's fields, borrowed from the mapped file.
#[derive(Debug, Clone)]
pub struct JsonRow<'a, V> {
    /// Global row number (for error messages).
    pub row: usize,
    /// The UUID, hyphenated.
    pub id: &'a str,
    /// `Company Name`.
    pub company_name: &'a str,
    /// `Exp Years`, parsed from `2y`.
    pub exp_years: i32,
    /// `English Level`.
    pub english_level: &'a str,
    /// `Primary Keyword`.
    pub primary_keyword: &'a str,
    /// The vector's components, as f32.
    pub vector: V,
}

/// Append a JSON string literal (quotes and escapes included).
fn write_str(buf: &mut Vec<u8>, s: &str) {
    // serde_json's escaping; writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Append one row object to `buf`; `first` says whether it opens the array
/// (no comma before it). On error `buf` is left as it was.
pub fn write_row<V: Iterator<Item = f32>>(
    buf: &mut Vec<u8>,
    row: JsonRow<'_, V>,
    first: bool,
) -> Result<(), JsonError> {
    let mark = buf.len();
    if !first {
        buf.push(b',');
    }
    buf.extend_from_slice(b"{\"id\":");
    write_str(buf, row.id);
    buf.extend_from_slice(b",\"company_name\":");
    write_str(buf, row.company_name);
    // Writing an integer into a Vec cannot fail.
    let _ = write!(buf, ",\"exp_years\":{}", row.exp_years);
    buf.extend_from_slice(b",\"english_level\":");
    write_str(buf, row.english_level);
    buf.extend_from_slice(b",\"primary_keyword\":");
    write_str(buf, row.primary_keyword);
    buf.extend_from_slice(b",\"vector\":[");
    let mut fmt = ryu::Buffer::new();
    for (component, value) in row.vector.enumerate() {
        if !value.is_finite() {
            buf.truncate(mark);
            return Err(JsonError::NonFinite {
                row: row.row,
                id: row.id.to_string(),
                component,
                value,
            });
        }
        if component > 0 {
            buf.push(b',');
        }
        // The shortest decimal that parses back to this very f32.
        buf.extend_from_slice(fmt.format_finite(value).as_bytes());
    }
    buf.extend_from_slice(b"]}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(vector: &[f32]) -> JsonRow<'static, impl Iterator<Item = f32> + '_> {
        JsonRow {
            row: 7,
            id: "0190a0c0-0000-7000-8000-000000000001",
            company_name: "Acme \"Q\"\n",
            exp_years: 3,
            english_level: "upper",
            primary_keyword: "Rust",
            vector: vector.iter().copied(),
        }
    }

    #[test]
    fn floats_round_trip_as_f32_and_strings_are_escaped() {
        let vector = [
            0.1f32,
            -1.0e-7,
            3.4028235e38,
            1.0,
            f32::MIN_POSITIVE,
            0.0,
            -0.0,
        ];
        let mut buf = b"[".to_vec();
        write_row(&mut buf, row(&vector), true).unwrap();
        write_row(&mut buf, row(&vector[..1]), false).unwrap();
        buf.push(b']');
        let parsed: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let rows = parsed.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["company_name"], "Acme \"Q\"\n");
        assert_eq!(rows[0]["exp_years"], 3);
        let back: Vec<f32> = rows[0]["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            vector.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // Shortest f32 form, not the f64 expansion 0.10000000149011612.
        assert!(String::from_utf8_lossy(&buf).contains("[0.1,"));
    }

    #[test]
    fn non_finite_values_are_refused_with_their_place() {
        let mut buf = b"[{}".to_vec();
        let err = write_row(&mut buf, row(&[1.0, f32::NAN]), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 7 (0190a0c0-0000-7000-8000-000000000001): vector component 1 is NaN, which JSON cannot carry; fix the source data and convert again"
        );
        assert_eq!(buf, b"[{}", "nothing written for a refused row");
    }
}
