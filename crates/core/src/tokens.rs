//! Bearer tokens: who may call fleetscore's HTTP services (ingest, the monitor). One file format
//! and one check for every service: `{"tokens": [{"name": "site-a", "token": "…", "devices":
//! ["d1"]}]}`, secrets of at least 16 characters, compared in constant time, the `Bearer`
//! scheme matched without regard to case.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The shortest secret accepted.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Who may call: bearer tokens, each optionally limited to some devices.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Tokens {
    /// The tokens.
    pub tokens: Vec<Token>,
}

/// One bearer token.
#[derive(Debug, Clone, Deserialize)]
pub struct Token {
    /// A name for logs and stats (never the secret).
    pub name: String,
    /// The secret the client sends as `Authorization: Bearer <token>`.
    pub token: String,
    /// If given, the only devices this token may write readings for.
    #[serde(default)]
    pub devices: Option<HashSet<String>>,
}

/// A tokens file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read tokens file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a tokens file, or holds a token too short to be secret.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and what was expected.
        reason: String,
    },
}

impl Tokens {
    /// Reads a tokens file: `{"tokens": [{"name": "site-a", "token": "…", "devices": ["d1"]}]}`.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let bytes = std::fs::read(path).map_err(|e| TokensError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Tokens::parse(path, &bytes)
    }

    /// Parses the bytes of a tokens file; `path` names it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Tokens, TokensError> {
        let invalid = |reason: String| TokensError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let t: Tokens = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "not a tokens file ({e}); expected {{\"tokens\": [{{\"name\": \"site-a\", \"token\": \"…\", \"devices\": [\"d1\"]}}]}}"
            ))
        })?;
        if let Some(bad) = t
            .tokens
            .iter()
            .find(|t| t.token.chars().count() < MIN_TOKEN_CHARS)
        {
            return Err(invalid(format!(
                "token `{}` is shorter than {MIN_TOKEN_CHARS} characters",
                bad.name
            )));
        }
        Ok(t)
    }

    /// The token whose secret is `secret`, if any. Every token is compared in full, so timing
    /// does not reveal a prefix.
    pub fn find(&self, secret: &str) -> Option<&Token> {
        self.tokens
            .iter()
            .find(|t| constant_time_eq(t.token.as_bytes(), secret.as_bytes()))
    }

    /// The token an `Authorization` header value presents (`Bearer <secret>`), if it is one of
    /// these.
    pub fn authorize(&self, authorization: &str) -> Option<&Token> {
        bearer_credentials(authorization).and_then(|secret| self.find(secret.trim()))
    }
}

/// Compares without stopping at the first difference, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credentials of an `Authorization` header value in the `Bearer` scheme (matched without
/// regard to case, as RFC 9110 says schemes are).
pub fn bearer_credentials(header: &str) -> Option<&str> {
    let (scheme, credentials) = header.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        assert_eq!(bearer_credentials("Bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("bearer abc"), Some("abc"));
        assert_eq!(bearer_credentials("BEARER abc"), Some("abc"));
        assert_eq!(bearer_credentials("Basic abc"), None);
        assert_eq!(bearer_credentials("Bearerabc"), None);
    }

    #[test]
    fn tokens_files_are_checked_and_tokens_found_by_their_secret() {
        let path = Path::new("tokens.json");
        let t = Tokens::parse(
            path,
            br#"{"tokens": [{"name": "ops", "token": "0123456789abcdef"}]}"#,
        )
        .unwrap();
        assert_eq!(
            t.authorize("Bearer 0123456789abcdef").map(|t| &t.name[..]),
            Some("ops")
        );
        assert!(t.authorize("Bearer 0123456789abcdeX").is_none());
        assert!(t.authorize("0123456789abcdef").is_none());
        let short = Tokens::parse(path, br#"{"tokens": [{"name": "s", "token": "short"}]}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            short,
            "tokens.json: token `s` is shorter than 16 characters"
        );
        let wrong = Tokens::parse(path, b"[]").unwrap_err().to_string();
        assert!(
            wrong.starts_with("tokens.json: not a tokens file"),
            "{wrong}"
        );
    }
}
