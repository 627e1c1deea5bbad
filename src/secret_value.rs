//! [`SecretValue`]: a value that may be a credential, which never formats its content. Pure, so
//! that the Dapr model, the credential checks and the NATS connection can hold one without
//! depending on how Secrets are read ([`crate::secrets`]).

use std::fmt;

/// A value that may be a credential. Its `Debug` and `Display` never show the content, so it can
/// sit in any struct that is logged or put in an error without leaking.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct SecretValue(String);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The content. Call only where the value is handed to the thing that needs it (the NATS
    /// client, a parser); never to format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (a missing Secret key resolves to an empty value).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl fmt::Display for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_value_never_formats_its_content() {
        let v = SecretValue::new("s3cr3t");
        assert!(!format!("{v:?} {v}").contains("s3cr3t"));
        assert_eq!(v.expose(), "s3cr3t");
    }
}
