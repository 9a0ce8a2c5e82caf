//! A string whose value never reaches a log, a report or serialized output.
//!
//! ```
//! use opskit::Secret;
//! let s = Secret::new("hunter2-hunter2");
//! assert_eq!(format!("{s}"), "[REDACTED]");
//! assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
//! assert_eq!(serde_json::to_string(&s).unwrap(), "\"[REDACTED]\"");
//! assert_eq!(s.expose(), "hunter2-hunter2");
//! ```
use secrecy::{ExposeSecret, SecretString};
use std::fmt;

/// A secret string (API key, password, signing key).
///
/// `Debug`, `Display` and `Serialize` print `[REDACTED]`; the memory is
/// zeroed on drop (through [`secrecy`]). Read the value with [`Secret::expose`]
/// only where it is used.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    /// The secret value. Call this only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Length in characters (not bytes), for validation.
    pub fn char_len(&self) -> usize {
        self.expose().chars().count()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[REDACTED]")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}
