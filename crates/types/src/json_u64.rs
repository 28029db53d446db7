//! 64-bit integers in JSON as decimal strings.
//!
//! JavaScript's `JSON.parse` reads every number as an IEEE double, which is exact only up
//! to 2^53 − 1: a receipt seed of 2^60 comes back rounded, and the receipt no longer
//! matches its signature. Fields that can exceed 2^53 are therefore written as strings
//! (`"seed": "1152921504606846977"`) and read from either a string or a number, so files
//! written before the change still load.
//!
//! Use with `#[serde(with = "vouch_types::json_u64")]` (or `json_u64::option` for
//! `Option<u64>`).

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an unsigned 64-bit integer, as a decimal string or a number")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        // A JSON number with a fraction or an exponent is not an integer we wrote.
        Err(E::custom(format!(
            "{v} is not an unsigned integer (write 64-bit values as decimal strings)"
        )))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom(format!("{v:?} is not a decimal integer")));
        }
        v.parse()
            .map_err(|_| E::custom(format!("{v} does not fit in 64 bits")))
    }
}

/// The same for `Option<u64>` (absent or `null` is `None`); pair with
/// `#[serde(default)]`.
pub mod option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super")] u64);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct T {
        #[serde(with = "super")]
        a: u64,
        #[serde(default, with = "super::option")]
        b: Option<u64>,
    }

    #[test]
    fn strings_on_the_wire_numbers_still_read() {
        let big = (1u64 << 60) + 1;
        let t = T {
            a: big,
            b: Some(u64::MAX),
        };
        let s = serde_json::to_string(&t).unwrap();
        assert_eq!(
            s,
            r#"{"a":"1152921504606846977","b":"18446744073709551615"}"#
        );
        assert_eq!(serde_json::from_str::<T>(&s).unwrap(), t);
        let old: T = serde_json::from_str(r#"{"a":1152921504606846977,"b":7}"#).unwrap();
        assert_eq!((old.a, old.b), (big, Some(7)));
        let none: T = serde_json::from_str(r#"{"a":"0","b":null}"#).unwrap();
        assert_eq!(none.b, None);
        assert_eq!(serde_json::from_str::<T>(r#"{"a":"1"}"#).unwrap().b, None);
        for bad in [
            r#"{"a":-1}"#,
            r#"{"a":1.5}"#,
            r#"{"a":"1e3"}"#,
            r#"{"a":"-1"}"#,
            r#"{"a":""}"#,
            r#"{"a":"18446744073709551616"}"#,
        ] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
    }
}
