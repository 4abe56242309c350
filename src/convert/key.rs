//! The key column: RFC 9562 UUID version 7, strictly increasing in row order.
//!
//! Keys are generated with the RFC's "fixed-length dedicated counter" method
//! (§6.2, method 1): 48 bits of Unix milliseconds, then a 42-bit counter
//! spread over `rand_a` and the top of `rand_b`, then 32 random bits. The
//! counter starts at a random value below 2^41 (headroom) and is incremented
//! per row; when it would overflow, the timestamp advances by one millisecond.
//! Keys therefore sort strictly by row as big-endian bytes, by construction.
//!
//! An input that already carries a key column (a pickle made from a converted
//! file) keeps it, so converting twice never re-keys.

use std::{
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use arrow_array::{
    Array, ArrayRef, BinaryArray, FixedSizeBinaryArray, LargeStringArray, StringArray,
};
use arrow_buffer::Buffer;
use arrow_schema::DataType;

use crate::format::{self, format_uuid};

const COUNTER_BITS: u32 = 42;
/// The counter's exclusive upper bound.
pub const COUNTER_LIMIT: u64 = 1 << COUNTER_BITS;

/// Generates strictly increasing UUID v7 keys.
#[derive(Debug, Clone)]
pub struct KeyGenerator {
    millis: u64,
    counter: u64,
    rng: SplitMix64,
}

impl KeyGenerator {
    /// A generator starting at the current time, seeded from the OS.
    pub fn new() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // One OS random draw seeds a fast PRNG: a syscall per row would cost
        // more than the rest of the conversion.
        // (the random tail of a v7 UUID from the uuid crate: 62 OS-random bits)
        let seed = uuid::Uuid::now_v7().as_u64_pair().1;
        Self::with_seed(millis, seed)
    }

    /// A deterministic generator (tests).
    pub fn with_seed(millis: u64, seed: u64) -> Self {
        let mut rng = SplitMix64(seed);
        let counter = rng.next() >> (64 - (COUNTER_BITS - 1));
        KeyGenerator {
            millis: millis & 0xFFFF_FFFF_FFFF,
            counter,
            rng,
        }
    }

    /// The next key.
    pub fn next_key(&mut self) -> [u8; 16] {
        self.counter += 1;
        if self.counter >= COUNTER_LIMIT {
            self.millis += 1;
            self.counter = self.rng.next() >> (64 - (COUNTER_BITS - 1));
        }
        let tail = self.rng.next() as u32;
        compose_v7(self.millis, self.counter, tail)
    }

    /// Advance as `n` calls of [`KeyGenerator::next_key`] would, in
    /// O(1) per counter overflow: the data set converter gives each input
    /// the keys that follow the previous inputs' rows, whichever thread
    /// converts it, so parallel and sequential conversions write the same keys.
    pub fn skip(&mut self, mut n: u64) {
        while n > 0 {
            // Calls that only increment the counter (one draw each).
            let room = COUNTER_LIMIT - 1 - self.counter;
            if n <= room {
                self.counter += n;
                self.rng.skip(n);
                return;
            }
            self.counter += room;
            self.rng.skip(room);
            // The call that overflows (two draws).
            self.next_key();
            n -= room + 1;
        }
    }

    /// A key column of `rows` fresh keys.
    pub fn column(&mut self, rows: usize) -> FixedSizeBinaryArray {
        let mut bytes = Vec::with_capacity(rows * 16);
        for _ in 0..rows {
            bytes.extend_from_slice(&self.next_key());
        }
        FixedSizeBinaryArray::new(16, Buffer::from_vec(bytes), None)
    }
}

impl Default for KeyGenerator {
    fn default() -> Self {
        Self::new()
    }
}

/// A v7 key from its parts: 48 bits of Unix milliseconds, the 42-bit counter
/// (the 12 bits of `rand_a`, then the top 30 bits of `rand_b` after the
/// variant, as RFC 9562 §6.2 method 1 allows), then 32 tail bits. Keys with
/// a greater (millis, counter) are greater as big-endian bytes, whatever
/// their tails.
pub fn compose_v7(millis: u64, counter: u64, tail: u32) -> [u8; 16] {
    let c = counter;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&(millis & 0xFFFF_FFFF_FFFF).to_be_bytes()[2..]);
    b[6] = 0x70 | ((c >> 38) & 0x0f) as u8; // version 7 + counter bits 41..38
    b[7] = (c >> 30) as u8; // counter bits 37..30
    b[8] = 0x80 | ((c >> 24) & 0x3f) as u8; // variant 10 + counter bits 29..24
    b[9] = (c >> 16) as u8;
    b[10] = (c >> 8) as u8;
    b[11] = c as u8;
    b[12..].copy_from_slice(&tail.to_be_bytes());
    b
}

/// The (millis, counter) of a key laid out as [`compose_v7`] does; for any
/// other v7 key, the same bits read as if it were (bytewise order is kept:
/// a key composed from a greater pair is greater).
pub fn split_v7(key: &[u8; 16]) -> (u64, u64) {
    let millis = u64::from_be_bytes([0, 0, key[0], key[1], key[2], key[3], key[4], key[5]]);
    let counter = (u64::from(key[6] & 0x0f) << 38)
        | (u64::from(key[7]) << 30)
        | (u64::from(key[8] & 0x3f) << 24)
        | (u64::from(key[9]) << 16)
        | (u64::from(key[10]) << 8)
        | u64::from(key[11]);
    (millis, counter)
}

/// splitmix64: tiny, fast, good enough for the random tail of a key.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    /// Skip `n` draws (the state is a counter).
    fn skip(&mut self, n: u64) {
        self.0 = self
            .0
            .wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(n));
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Why an existing column cannot serve as the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the input already has a column `{column}` that cannot be the key: {reason}; name the key column something else with --key-column")]
pub struct KeyClash {
    /// Column name.
    pub column: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Turn an existing column into the key if it holds strictly increasing UUID
/// v7 values (as 16-byte binaries or UUID strings); otherwise explain why not.
pub fn adopt_existing(column: &str, array: &ArrayRef) -> Result<FixedSizeBinaryArray, KeyClash> {
    let clash = |reason: String| KeyClash {
        column: column.to_string(),
        reason,
    };
    let keys = match array.data_type() {
        DataType::FixedSizeBinary(16) => array
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .cloned()
            .ok_or_else(|| clash("unreadable 16-byte column".into()))?,
        DataType::Binary => {
            let a = array
                .as_any()
                .downcast_ref::<BinaryArray>()
                .ok_or_else(|| clash("unreadable".into()))?;
            collect_keys(a.len(), |i| {
                (!a.is_null(i))
                    .then(|| a.value(i))
                    .and_then(|v| <[u8; 16]>::try_from(v).ok())
            })
            .map_err(|row| clash(format!("row {row} is not 16 bytes")))?
        }
        DataType::Utf8 | DataType::LargeUtf8 => {
            let text = |i: usize| -> Option<&str> {
                if array.is_null(i) {
                    return None;
                }
                match array.data_type() {
                    DataType::Utf8 => array
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .map(|a| a.value(i)),
                    _ => array
                        .as_any()
                        .downcast_ref::<LargeStringArray>()
                        .map(|a| a.value(i)),
                }
            };
            collect_keys(array.len(), |i| {
                text(i)
                    .and_then(|s| uuid::Uuid::try_parse(s).ok())
                    .map(|u| u.into_bytes())
            })
            .map_err(|row| clash(format!("row {row} is not a UUID string")))?
        }
        other => return Err(clash(format!("it is {other}, not UUIDs"))),
    };
    if keys.null_count() > 0 {
        return Err(clash("it has nulls".into()));
    }
    let mut previous: Option<&[u8]> = None;
    for i in 0..keys.len() {
        let key = keys.value(i);
        if !format::is_v7(key) {
            return Err(clash(format!(
                "row {i} ({}) is not a version 7 UUID",
                format_uuid(key)
            )));
        }
        if let Some(prev) = previous {
            format::check_key_order(i, prev, key).map_err(|e| clash(format!("keys are {e}")))?;
        }
        previous = Some(key);
    }
    Ok(keys)
}

/// Build a 16-byte column from `get(row)`, or the first row that has no key.
fn collect_keys(
    rows: usize,
    get: impl Fn(usize) -> Option<[u8; 16]>,
) -> Result<FixedSizeBinaryArray, usize> {
    let mut bytes = Vec::with_capacity(rows * 16);
    for i in 0..rows {
        bytes.extend_from_slice(&get(i).ok_or(i)?);
    }
    Ok(FixedSizeBinaryArray::new(16, Buffer::from_vec(bytes), None))
}

/// The key column as an `ArrayRef`.
pub fn as_array(keys: FixedSizeBinaryArray) -> ArrayRef {
    Arc::new(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_v7_and_strictly_increasing_across_counter_overflow() {
        let mut generator = KeyGenerator::with_seed(1_700_000_000_000, 42);
        generator.counter = COUNTER_LIMIT - 3; // force a rollover into the next millisecond
        let keys: Vec<[u8; 16]> = (0..10_000).map(|_| generator.next_key()).collect();
        for pair in keys.windows(2) {
            assert!(
                pair[0] < pair[1],
                "{} !< {}",
                format_uuid(&pair[0]),
                format_uuid(&pair[1])
            );
        }
        for key in &keys {
            let parsed = uuid::Uuid::from_bytes(*key);
            assert_eq!(parsed.get_version_num(), 7);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        }
        let ms = |k: &[u8; 16]| u64::from_be_bytes([0, 0, k[0], k[1], k[2], k[3], k[4], k[5]]);
        assert_eq!(ms(&keys[0]), 1_700_000_000_000);
        assert_eq!(ms(&keys[9_999]), 1_700_000_000_001);
    }

    #[test]
    fn skip_is_the_same_as_drawing_keys() {
        for (start, n) in [
            (None, 0),
            (None, 1),
            (None, 1000),
            (Some(COUNTER_LIMIT - 3), 5),
            (Some(COUNTER_LIMIT - 3), 2),
            (Some(COUNTER_LIMIT - 2), 1),
        ] {
            let mut drawn = KeyGenerator::with_seed(1_700_000_000_000, 7);
            let mut skipped = KeyGenerator::with_seed(1_700_000_000_000, 7);
            if let Some(c) = start {
                drawn.counter = c;
                skipped.counter = c;
            }
            for _ in 0..n {
                drawn.next_key();
            }
            skipped.skip(n);
            assert_eq!(
                drawn.next_key(),
                skipped.next_key(),
                "start {start:?}, n {n}"
            );
        }
    }

    #[test]
    fn adopts_sorted_v7_strings_and_refuses_others() {
        let mut generator = KeyGenerator::with_seed(1_700_000_000_000, 1);
        let keys: Vec<String> = (0..5).map(|_| format_uuid(&generator.next_key())).collect();
        let array: ArrayRef = Arc::new(StringArray::from(keys.clone()));
        let adopted = adopt_existing("uuid", &array).unwrap();
        assert_eq!(format_uuid(adopted.value(4)), keys[4]);

        let mut reversed = keys.clone();
        reversed.reverse();
        let err = adopt_existing("uuid", &(Arc::new(StringArray::from(reversed)) as ArrayRef))
            .unwrap_err();
        assert!(
            err.to_string().contains("not strictly increasing at row 1"),
            "{err}"
        );

        let v4 = vec!["b1a0c3f2-57d1-4f0e-9a3c-2b5d1e0f9a11".to_string()];
        let err =
            adopt_existing("uuid", &(Arc::new(StringArray::from(v4)) as ArrayRef)).unwrap_err();
        assert!(err.to_string().contains("is not a version 7 UUID"), "{err}");

        let ints: ArrayRef = Arc::new(arrow_array::Int64Array::from(vec![1, 2]));
        let err = adopt_existing("uuid", &ints).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the input already has a column `uuid` that cannot be the key: it is Int64, not UUIDs; name the key column something else with --key-column"
        );
    }
}
