//! The JSON of an `IngestDataStream` data chunk, written straight into a
//! buffer: an array of objects keyed by the RecruitRow field names.
//!
//! Floats are written by serde_json as the shortest representation of the
//! *f32* value, so each parses back to exactly the same f32 (what the Batch
//! Server stores) without the 17-digit noise of printing it as f64.

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

/// One row's fields, borrowed from the mapped file, serialized by serde in
/// this field order.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(bound = "V: Iterator<Item = f32> + Clone")]
pub struct JsonRow<'a, V> {
    /// Global row number (for error messages; not written).
    #[serde(skip)]
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
    #[serde(serialize_with = "components")]
    pub vector: V,
}

/// A vector as a JSON array. serde_json writes an `f32` as the shortest
/// decimal that parses back to that very f32 (ryu's f32 form).
fn components<V, S>(vector: &V, serializer: S) -> Result<S::Ok, S::Error>
where
    V: Iterator<Item = f32> + Clone,
    S: serde::Serializer,
{
    serializer.collect_seq(vector.clone())
}

/// Append one row object to `buf`; `first` says whether it opens the array
/// (no comma before it). A row with a NaN or infinite component (serde_json
/// would write `null`) is refused and `buf` is left as it was.
pub fn write_row<V: Iterator<Item = f32> + Clone>(
    buf: &mut Vec<u8>,
    row: JsonRow<'_, V>,
    first: bool,
) -> Result<(), JsonError> {
    if let Some((component, value)) = row.vector.clone().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(JsonError::NonFinite {
            row: row.row,
            id: row.id.to_string(),
            component,
            value,
        });
    }
    if !first {
        buf.push(b',');
    }
    // Serializing plain strings, an integer and finite floats into a Vec
    // cannot fail.
    let _ = serde_json::to_writer(&mut *buf, &row);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(vector: &[f32]) -> JsonRow<'static, impl Iterator<Item = f32> + Clone + '_> {
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
