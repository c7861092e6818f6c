//! Input rules shared by the resources: trimmed text with bounds, email shape, colours, and the
//! "absent / null / value" reading of patch fields.
//!
//! Each check reports the field it was given, so a client sees which input was wrong. This
//! module must never touch the database.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::TicketError;

/// Collects field errors so a request reports all of them at once.
#[derive(Debug, Default)]
pub(crate) struct Problems(BTreeMap<String, String>);

impl Problems {
    pub fn add(&mut self, field: &str, reason: impl Into<String>) {
        self.0
            .entry(field.to_owned())
            .or_insert_with(|| reason.into());
    }

    /// Records the error of `result` (if any) and passes its value on.
    pub fn check<T>(&mut self, result: Result<T, (String, String)>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err((field, reason)) => {
                self.add(&field, reason);
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), TicketError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(TicketError::Invalid(self.0))
        }
    }
}

/// Text that must not be blank once trimmed, at most `max` characters.
pub(crate) fn required_text(
    field: &str,
    value: &str,
    max: usize,
) -> Result<String, (String, String)> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err((field.to_owned(), "must not be blank".to_owned()));
    }
    if trimmed.chars().count() > max {
        return Err((
            field.to_owned(),
            format!("must be at most {max} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

/// Optional text: blank becomes `None`; at most `max` characters.
pub(crate) fn optional_text(
    field: &str,
    value: Option<&str>,
    max: usize,
) -> Result<Option<String>, (String, String)> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(text) if text.chars().count() > max => Err((
            field.to_owned(),
            format!("must be at most {max} characters"),
        )),
        Some(text) => Ok(Some(text.to_owned())),
    }
}

/// An email address: one `@` with text on both sides, a dot in the domain, no spaces.
pub(crate) fn email(field: &str, value: &str) -> Result<String, (String, String)> {
    let value = value.trim();
    let valid = value.len() <= 320
        && !value.chars().any(char::is_whitespace)
        && value.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if valid {
        Ok(value.to_owned())
    } else {
        Err((field.to_owned(), "must be an email address".to_owned()))
    }
}

/// A colour: `#rgb`/`#rrggbb` or a plain name (`red`, seed 003).
pub(crate) fn color(field: &str, value: &str) -> Result<String, (String, String)> {
    let value = value.trim();
    let hex = value.strip_prefix('#').is_some_and(|digits| {
        matches!(digits.len(), 3 | 6) && digits.chars().all(|c| c.is_ascii_hexdigit())
    });
    let name =
        !value.is_empty() && value.len() <= 32 && value.chars().all(|c| c.is_ascii_alphabetic());
    if hex || name {
        Ok(value.to_owned())
    } else {
        Err((
            field.to_owned(),
            "must be a hex colour like #ff0000 or a colour name".to_owned(),
        ))
    }
}

/// Reads a patch field as `Some(None)` when the client sent `null` and `Some(Some(v))` for a
/// value; with `#[serde(default)]`, an absent field stays `None`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A JSON object of custom fields (anything else is invalid).
pub(crate) fn custom_fields(
    field: &str,
    value: &serde_json::Value,
) -> Result<serde_json::Value, (String, String)> {
    if value.is_object() {
        Ok(value.clone())
    } else {
        Err((field.to_owned(), "must be a JSON object".to_owned()))
    }
}

/// A unique-index violation on `index`, if that is what `error` is.
pub(crate) fn is_unique_violation(error: &sqlx::Error, index: &str) -> bool {
    matches!(error, sqlx::Error::Database(db)
        if db.is_unique_violation() && db.constraint() == Some(index))
}

/// A domain error wrapping a serialisation failure (a bug, reported as a database-side error).
pub(crate) fn serialisation_failed(error: serde_json::Error) -> TicketError {
    TicketError::Database(sqlx::Error::Encode(Box::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_and_colours() {
        assert!(email("email", "jane@example.com").is_ok());
        assert!(email("email", "jane@example").is_err());
        assert!(email("email", "jane example.com").is_err());
        assert!(email("email", "@example.com").is_err());
        assert!(color("color", "#ff0000").is_ok());
        assert!(color("color", "red").is_ok());
        assert!(color("color", "#ggg").is_err());
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(
            required_text("name", "  Sam ", 10).ok().as_deref(),
            Some("Sam")
        );
        assert!(required_text("name", "   ", 10).is_err());
        assert!(required_text("name", "abcdefghijk", 10).is_err());
        assert_eq!(optional_text("phone", Some(" "), 5).ok(), Some(None));
    }
}
