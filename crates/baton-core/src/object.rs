//! Structs read from JSON objects only.
//!
//! serde's derived `Deserialize` for a struct also accepts an array of its fields in
//! declaration order, so `"retry_policy": [3, "1s", 2, "5m"]` would silently become a
//! policy. No client means that: it is a mistake, and one that binds a field order no API
//! promises. Request fields that hold structs use these helpers
//! (`#[serde(default, deserialize_with = "crate::object::optional")]`), which refuse
//! anything but an object with serde's usual message ("invalid type: sequence, expected
//! struct RetryPolicy"), without buffering the value.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use std::fmt;

/// `T` read only from an object (or, for a struct, whatever map its format has).
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(MapsOnly(d)).map(Object)
    }
}

/// For `T` fields.
pub fn required<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Object::<T>::deserialize(d)?.0)
}

/// For `Option<T>` fields: absent or `null` is `None`, an object is `Some`.
pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Object<T>>::deserialize(d)?.map(|o| o.0))
}

/// For `Vec<T>` fields: an array of objects.
pub fn list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Vec::<Object<T>>::deserialize(d)?
        .into_iter()
        .map(|o| o.0)
        .collect())
}

/// A deserializer that hands a struct's visitor maps only.
struct MapsOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapsOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_struct(name, fields, NoSeq(visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A struct's visitor without its `visit_seq`: a sequence is then the usual type error.
struct NoSeq<V>(V);

impl<'de, V: Visitor<'de>> Visitor<'de> for NoSeq<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Point {
        x: i64,
        y: i64,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Shape {
        #[serde(default, deserialize_with = "optional")]
        origin: Option<Point>,
        #[serde(default, deserialize_with = "list")]
        corners: Vec<Point>,
    }

    #[test]
    fn objects_are_read_and_arrays_refused() {
        let shape: Shape =
            serde_json::from_str(r#"{"origin": {"x": 1, "y": 2}, "corners": [{"x": 3, "y": 4}]}"#)
                .unwrap();
        assert_eq!(shape.origin, Some(Point { x: 1, y: 2 }));
        assert_eq!(shape.corners, vec![Point { x: 3, y: 4 }]);
        let empty: Shape = serde_json::from_str(r#"{"origin": null}"#).unwrap();
        assert_eq!(
            empty,
            Shape {
                origin: None,
                corners: vec![]
            }
        );

        // serde's derive alone would take both.
        let err = serde_json::from_str::<Shape>(r#"{"origin": [1, 2]}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid type: sequence, expected struct Point"),
            "{err}"
        );
        let err = serde_json::from_str::<Shape>(r#"{"corners": [[3, 4]]}"#).unwrap_err();
        assert!(err.to_string().contains("expected struct Point"), "{err}");
        let err = serde_json::from_str::<Shape>(r#"{"origin": 7}"#).unwrap_err();
        assert!(err.to_string().contains("expected struct Point"), "{err}");
    }
}
