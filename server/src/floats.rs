//! Numbers of a (nested) JSON array read straight into `f32`, for the KServe and Vertex parsers.
//!
//! Why not `serde_json::Value`: a `Value` costs 32 bytes per number against the 2 bytes (`0,`) a
//! number may take on the wire, so a 64 MB body of zeros would become a 1 GB tree before any size
//! check could run. Here each number costs its 4 bytes, every number is counted (so an error can say
//! exactly how many there were), and the first thing that is not a number is remembered instead of
//! failing the parse (the caller reports it as a bad input, not as bad JSON).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The numbers of a JSON value (a number, or arrays of them nested to any depth serde_json allows).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Floats {
    /// The numbers, row-major.
    pub values: Vec<f32>,
    /// What the value held that is not a number (`"a string"`, `"a boolean"`, `"null"`, `"an
    /// object"`), the first one found; such items are skipped.
    pub not_a_number: Option<&'static str>,
}

impl Floats {
    /// How many numbers there were.
    pub fn count(&self) -> usize {
        self.values.len()
    }
}

impl<'de> Deserialize<'de> for Floats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut floats = Floats::default();
        d.deserialize_any(Flatten(&mut floats))?;
        Ok(floats)
    }
}

/// Reads one JSON value into the [`Floats`] it borrows.
pub struct Flatten<'a>(pub &'a mut Floats);

impl Flatten<'_> {
    fn note(self, what: &'static str) {
        self.0.not_a_number.get_or_insert(what);
    }
}

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("numbers or (nested) arrays of numbers")
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.values.push(v as f32);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.values.push(v as f32);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.values.push(v as f32);
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        self.note("a string");
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        self.note("a boolean");
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.note("null");
        Ok(())
    }
    fn visit_none<E>(self) -> Result<(), E> {
        self.note("null");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        self.note("an object");
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_flatten_and_strangers_are_noted() {
        let f: Floats = serde_json::from_str("[[1, 2.5], [-3, [4e0]]]").unwrap();
        assert_eq!(f.values, [1.0, 2.5, -3.0, 4.0]);
        assert_eq!(f.not_a_number, None);
        let f: Floats = serde_json::from_str(r#"[1, "a", true, null, {"x": [1]}, 2]"#).unwrap();
        assert_eq!(f.values, [1.0, 2.0]);
        assert_eq!(f.not_a_number, Some("a string"));
        let f: Floats = serde_json::from_str("7").unwrap();
        assert_eq!(f.count(), 1);
    }
}
