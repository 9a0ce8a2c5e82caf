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
//!
//! URLs carry credentials too (`http://user:password@host`, a Sentry DSN's
//! key, `?password=` in a PostgreSQL URL): every URL opskit logs goes through
//! [`redact_urls`] first.
//!
//! ```
//! use opskit::redact_urls;
//! assert_eq!(
//!     redact_urls("cannot reach http://user:hunter2@collector:4318/v1/traces?key=k2"),
//!     "cannot reach http://[REDACTED]@collector:4318/v1/traces?[REDACTED]"
//! );
//! assert_eq!(redact_urls("http://collector:4318/v1/traces"), "http://collector:4318/v1/traces");
//! ```
use secrecy::{ExposeSecret, SecretString};
use std::borrow::Cow;
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

/// What replaces a URL's credentials.
const REDACTED: &str = "[REDACTED]";

/// `text` with the credentials of every URL in it hidden: the userinfo
/// (`user:password@`) and the query string (`?password=…`, `?sentry_key=…`)
/// each become `[REDACTED]`; scheme, host, port and path stay, so the line
/// still says where. Works on one URL and on free text (an error message
/// that quotes a URL) alike; borrows when there is nothing to hide.
///
/// A URL starts at `scheme://` and ends at whitespace, a quote, `<`, `>` or
/// the end of the text; its authority ends at the first `/`, `\`, `?` or
/// `#`, and its userinfo at the last `@` of the authority (as URL parsers
/// read it).
pub fn redact_urls(text: &str) -> Cow<'_, str> {
    let mut out = String::new();
    // Bytes of `text` already copied to `out`.
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let sep = search + found;
        let rest = sep + 3;
        search = rest;
        let scheme_start = text[..sep]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |i| i + 1);
        if !text[scheme_start..sep].starts_with(|c: char| c.is_ascii_alphabetic()) {
            continue;
        }
        let end = text[rest..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .map_or(text.len(), |i| rest + i);
        let url = &text[rest..end];
        let authority_len = url.find(['/', '\\', '?', '#']).unwrap_or(url.len());
        let userinfo = url[..authority_len].rfind('@');
        let query = url[authority_len..].find('?').map(|q| {
            let q = authority_len + q;
            let fragment = url[q..].find('#').map_or(url.len(), |f| q + f);
            (q, fragment)
        });
        if userinfo.is_none() && query.is_none_or(|(q, f)| f == q + 1) {
            continue;
        }
        out.push_str(&text[copied..rest]);
        let mut from = 0;
        if let Some(at) = userinfo {
            out.push_str(REDACTED);
            from = at;
        }
        match query {
            Some((q, f)) if f > q + 1 => {
                out.push_str(&url[from..=q]);
                out.push_str(REDACTED);
                out.push_str(&url[f..]);
            }
            _ => out.push_str(&url[from..]),
        }
        copied = end;
        search = end;
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::redact_urls;

    #[test]
    fn credentials_are_hidden_and_the_rest_kept() {
        for (given, shown) in [
            ("http://u:p@h:4318", "http://[REDACTED]@h:4318"),
            (
                "http://u:p@h:4318/v1/traces",
                "http://[REDACTED]@h:4318/v1/traces",
            ),
            (
                "redis://:pw@127.0.0.1:6379/0",
                "redis://[REDACTED]@127.0.0.1:6379/0",
            ),
            ("rediss://user@h", "rediss://[REDACTED]@h"),
            (
                "postgres://u:p@db/app?sslmode=require&password=x",
                "postgres://[REDACTED]@db/app?[REDACTED]",
            ),
            (
                "https://h/api/42/envelope/?sentry_key=k#frag",
                "https://h/api/42/envelope/?[REDACTED]#frag",
            ),
            // The last `@` of the authority ends the userinfo, as parsers read it.
            ("http://a@b:c@h/x@y", "http://[REDACTED]@h/x@y"),
            ("http://u:p@h?q", "http://[REDACTED]@h?[REDACTED]"),
            ("HTTP://U:P@H", "HTTP://[REDACTED]@H"),
            (
                "invalid URI http://u:p@h:1/v1/traces. Reason x; then grpc://k@g",
                "invalid URI http://[REDACTED]@h:1/v1/traces. Reason x; then grpc://[REDACTED]@g",
            ),
            (
                "\"http://u:p@h\" and 'ftp://a@b'",
                "\"http://[REDACTED]@h\" and 'ftp://[REDACTED]@b'",
            ),
            ("é http://ü:ö@h é", "é http://[REDACTED]@h é"),
        ] {
            assert_eq!(redact_urls(given), shown, "{given}");
        }
    }

    #[test]
    fn text_without_credentials_is_borrowed_unchanged() {
        for text in [
            "",
            "plain text",
            "http://collector:4318/v1/traces",
            "http://h/path?",
            "://no-scheme@x",
            "1://digit-scheme@x",
            "see http://h/users/@me",
            "a@b c://",
        ] {
            let r = redact_urls(text);
            assert!(matches!(r, std::borrow::Cow::Borrowed(_)), "{text}");
            assert_eq!(r, text);
        }
    }
}
