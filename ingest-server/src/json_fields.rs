//! Reading a flat JSON object field by field, strictly, without building a
//! `serde_json::Value`: the shared ground of the tick and order parsers.
//!
//! A parser walks the object's keys with [`Keys`], which knows the allowed names and
//! refuses an unknown or repeated key as it meets it (the last-wins of a map would let
//! `"price":1,"price":999` store 999). Each value is read as a [`Scalar`], which holds a
//! number or a string borrowed from the body (owned only when the JSON string has escapes)
//! and skips nested arrays or objects without keeping them; the parser then checks its
//! type per field and names the field when it is wrong.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::Deserializer;

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Not one of the allowed names (the name as sent).
    Unknown(String),
    /// Already seen in this object.
    Duplicate(&'static str),
}

impl KeyError {
    /// The key, as the error's `field`.
    pub fn field(&self) -> &str {
        match self {
            KeyError::Unknown(k) => k,
            KeyError::Duplicate(k) => k,
        }
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &'static str {
        match self {
            KeyError::Unknown(_) => "unknown field",
            KeyError::Duplicate(_) => "duplicate field: each key at most once",
        }
    }
}

/// The keys of one object: which names are allowed (each with what the parser calls it)
/// and which were seen. At most 32 names.
#[derive(Debug)]
pub struct Keys<T: Copy + 'static> {
    table: &'static [(&'static str, T)],
    seen: u32,
}

impl<T: Copy + 'static> Keys<T> {
    /// For an object whose keys are the names of `table`.
    pub fn new(table: &'static [(&'static str, T)]) -> Self {
        debug_assert!(table.len() <= 32);
        Keys { table, seen: 0 }
    }

    /// The next key of `map`, or `None` at the end of the object; an unknown or repeated
    /// key is an `Ok(Some(Err(_)))`, so that the caller can name it.
    pub fn next<'de, A: MapAccess<'de>>(
        &mut self,
        map: &mut A,
    ) -> Result<Option<Result<T, KeyError>>, A::Error> {
        let Some(found) = map.next_key_seed(KeySeed(self.table))? else {
            return Ok(None);
        };
        Ok(Some(found.and_then(|i| {
            let (name, what) = self.table[i];
            if self.seen & (1 << i) != 0 {
                return Err(KeyError::Duplicate(name));
            }
            self.seen |= 1 << i;
            Ok(what)
        })))
    }

    /// Whether the key called `what` was seen.
    pub fn seen(&self, what: T) -> bool
    where
        T: PartialEq,
    {
        self.table
            .iter()
            .enumerate()
            .any(|(i, (_, w))| *w == what && self.seen & (1 << i) != 0)
    }
}

/// Reads a key as its index in the table, without allocating unless it is unknown.
struct KeySeed<T: 'static>(&'static [(&'static str, T)]);

impl<'de, T> DeserializeSeed<'de> for KeySeed<T> {
    type Value = Result<usize, KeyError>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, T> Visitor<'de> for KeySeed<T> {
    type Value = Result<usize, KeyError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self
            .0
            .iter()
            .position(|(name, _)| *name == key)
            .ok_or_else(|| KeyError::Unknown(key.to_string())))
    }
}

/// One JSON value as a field holds it: a scalar, or the fact that it was an array or
/// object (skipped, not kept).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'de> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A negative integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A number with a fraction or an exponent.
    Float(f64),
    /// A string: borrowed from the body unless it has escapes.
    Str(Cow<'de, str>),
    /// An array or an object (its contents skipped).
    Nested,
}

impl Scalar<'_> {
    /// Any number, as `f64` (as `serde_json::Value::as_f64`).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::Int(n) => Some(n as f64),
            Scalar::UInt(n) => Some(n as f64),
            Scalar::Float(n) => Some(n),
            _ => None,
        }
    }

    /// An integer that fits `i64` (not `4.0`: as `serde_json::Value::as_i64`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Scalar::Int(n) => Some(n),
            Scalar::UInt(n) => i64::try_from(n).ok(),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Scalar::Null)
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_string())))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum F {
        A,
        B,
    }
    const TABLE: &[(&str, F)] = &[("a", F::A), ("b", F::B)];

    /// The keys and values of one object, or the first refused key.
    fn read(json: &str) -> Result<Vec<(F, Scalar<'_>)>, KeyError> {
        struct Seed;
        impl<'de> DeserializeSeed<'de> for Seed {
            type Value = Result<Vec<(F, Scalar<'de>)>, KeyError>;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(self)
            }
        }
        impl<'de> Visitor<'de> for Seed {
            type Value = Result<Vec<(F, Scalar<'de>)>, KeyError>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut keys = Keys::new(TABLE);
                let mut out = Vec::new();
                while let Some(k) = keys.next(&mut m)? {
                    match k {
                        Ok(k) => out.push((k, m.next_value()?)),
                        Err(e) => {
                            m.next_value::<IgnoredAny>()?;
                            while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                            return Ok(Err(e));
                        }
                    }
                }
                Ok(Ok(out))
            }
        }
        let mut de = serde_json::Deserializer::from_str(json);
        Seed.deserialize(&mut de).unwrap()
    }

    #[test]
    fn unknown_and_repeated_keys_are_named() {
        assert_eq!(
            read(r#"{"a":1,"a":2}"#).unwrap_err(),
            KeyError::Duplicate("a")
        );
        assert_eq!(
            read(r#"{"a":1,"\u0061":2}"#).unwrap_err(),
            KeyError::Duplicate("a")
        );
        assert_eq!(
            read(r#"{"a":1,"c":2}"#).unwrap_err(),
            KeyError::Unknown("c".into())
        );
    }

    #[test]
    fn values_are_scalars_borrowed_where_they_can_be() {
        let got = read(r#"{"a":"x\"y","b":[1,{"z":2}]}"#).unwrap();
        assert_eq!(got[0], (F::A, Scalar::Str(Cow::Owned("x\"y".into()))));
        assert_eq!(got[1], (F::B, Scalar::Nested));
        let got = read(r#"{"a":"plain","b":-3}"#).unwrap();
        assert!(matches!(got[0].1, Scalar::Str(Cow::Borrowed("plain"))));
        assert_eq!(got[1].1.as_i64(), Some(-3));
        let got = read(r#"{"a":4.0,"b":18446744073709551615}"#).unwrap();
        assert_eq!((got[0].1.as_i64(), got[0].1.as_f64()), (None, Some(4.0)));
        assert_eq!(got[1].1.as_i64(), None);
    }
}
