//! The ACL token newtype: a secret that must never reach logs, events or status.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Consul ACL secret (a token's `SecretID`).
///
/// `Debug` and `Display` print `***` so that a token inside any struct, error or
/// tracing field is redacted by construction; the only way to the secret is the
/// explicitly named [`Token::expose_secret`]. Serde (de)serializes the plain string
/// because Consul's API and Kubernetes Secrets need the real value.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself; call sites are meant to be few and easy to grep.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Token {
    fn from(secret: String) -> Self {
        Self(secret)
    }
}

impl From<&str> for Token {
    fn from(secret: &str) -> Self {
        Self(secret.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let token = Token::new("b3a9c7e2-secret");
        assert_eq!(format!("{token}"), "***");
        assert_eq!(format!("{token:?}"), "Token(***)");
        // Nested inside other types (as in a config struct) it stays redacted.
        let holder = format!("{:?}", (Some(token.clone()), vec![token.clone()]));
        assert!(!holder.contains("b3a9"), "{holder}");
        assert_eq!(token.expose_secret(), "b3a9c7e2-secret");
    }

    #[test]
    fn serde_keeps_the_real_value_for_the_api() {
        let token: Token = serde_json::from_str("\"abc\"").expect("decode");
        assert_eq!(serde_json::to_string(&token).expect("encode"), "\"abc\"");
    }
}
