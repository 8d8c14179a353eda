//! SASL authentication on a broker connection: PLAIN (Azure Event Hubs: the user
//! `$ConnectionString` and the namespace's connection string as the password), and
//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677), with aws-lc-rs, the crypto the tree
//! already has.
//!
//! The exchange is SaslHandshake v1, naming the mechanism, then its messages in
//! SaslAuthenticate v0 requests (KIP-152), what Event Hubs' Kafka endpoint expects; a refusal
//! is the broker's `SASL_AUTHENTICATION_FAILED` with its message, never the password.

use std::time::Duration;

use aws_lc_rs::{digest, hmac, pbkdf2, rand};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use super::conn::Conn;
use super::wire::{KafkaCode, R, SASL_AUTHENTICATE, SASL_HANDSHAKE, W};
use crate::error::{Error, Result};

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// The username and password in the clear (over TLS only, in practice): Event Hubs.
    Plain,
    /// SCRAM with SHA-256.
    ScramSha256,
    /// SCRAM with SHA-512.
    ScramSha512,
}

impl Mechanism {
    /// From the names Kafka uses: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    pub fn parse(name: &str) -> Result<Mechanism> {
        match name.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Mechanism::Plain),
            "SCRAM-SHA-256" => Ok(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(Mechanism::ScramSha512),
            _ => Err(Error::Config(format!(
                "SASL mechanism {name:?}: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
            ))),
        }
    }

    /// The name Kafka uses.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials. The password never shows in `Debug`.
#[derive(Clone)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: Mechanism,
    /// The username (`$ConnectionString` for Event Hubs).
    pub username: String,
    /// The password (for Event Hubs, the connection string).
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Conn {
    /// Authenticates this connection with `sasl`.
    pub(super) async fn authenticate(&mut self, sasl: &Sasl) -> Result<()> {
        let mut w = W(Vec::new());
        w.str(sasl.mechanism.name());
        let resp = self.call(SASL_HANDSHAKE, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "SASL handshake",
        };
        let code = r.code()?;
        if code == KafkaCode::UNSUPPORTED_SASL_MECHANISM {
            let mut offered = Vec::new();
            for _ in 0..r.count()? {
                offered.push(r.str()?);
            }
            return Err(Error::Config(format!(
                "{}: the broker does not offer SASL {} (it offers {})",
                self.addr(),
                sasl.mechanism.name(),
                offered.join(", ")
            )));
        }
        code.check("SASL handshake")?;
        match sasl.mechanism {
            Mechanism::Plain => {
                let mut token = Vec::with_capacity(sasl.username.len() + sasl.password.len() + 2);
                token.push(0);
                token.extend_from_slice(sasl.username.as_bytes());
                token.push(0);
                token.extend_from_slice(sasl.password.as_bytes());
                self.sasl_step(&token).await?;
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let mut scram = Scram::new(sasl, &nonce()?);
                let server_first = self.sasl_step(scram.client_first().as_bytes()).await?;
                let client_final = scram.client_final(&String::from_utf8_lossy(&server_first))?;
                let server_final = self.sasl_step(client_final.as_bytes()).await?;
                scram.check_server_final(&String::from_utf8_lossy(&server_final))?;
            }
        }
        Ok(())
    }

    /// One SaslAuthenticate round: sends `token`, returns the broker's.
    async fn sasl_step(&mut self, token: &[u8]) -> Result<Vec<u8>> {
        let mut w = W(Vec::new());
        w.bytes(token);
        let resp = self.call(SASL_AUTHENTICATE, &w.0, Duration::ZERO).await?;
        let mut r = R {
            b: &resp,
            what: "SASL authenticate",
        };
        let code = r.code()?;
        let message = r.str()?;
        let answer = r.bytes()?.to_vec();
        if code != KafkaCode::NONE {
            return Err(Error::Auth(format!(
                "{}: SASL authentication refused: {}",
                self.addr(),
                if message.is_empty() {
                    code.to_string()
                } else {
                    message
                }
            )));
        }
        Ok(answer)
    }
}

/// A client nonce: 18 random bytes, base64 (printable, no commas).
fn nonce() -> Result<String> {
    use rand::SecureRandom;
    let mut bytes = [0u8; 18];
    rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Config("no random numbers for the SCRAM nonce".into()))?;
    Ok(B64.encode(bytes))
}

/// The client side of one SCRAM exchange (no channel binding: `n,,`).
struct Scram<'a> {
    sasl: &'a Sasl,
    client_first_bare: String,
    nonce: String,
    /// The signature the server must send back (`v=`), once the client's final is made.
    server_signature: Vec<u8>,
}

impl<'a> Scram<'a> {
    fn new(sasl: &'a Sasl, nonce: &str) -> Scram<'a> {
        // RFC 5802: `=` and `,` in the name are escaped. (The password is used as given; SASLprep
        // changes nothing in an ASCII password.)
        let user = sasl.username.replace('=', "=3D").replace(',', "=2C");
        Scram {
            sasl,
            client_first_bare: format!("n={user},r={nonce}"),
            nonce: nonce.to_string(),
            server_signature: Vec::new(),
        }
    }

    fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    fn algorithms(
        &self,
    ) -> (
        pbkdf2::Algorithm,
        hmac::Algorithm,
        &'static digest::Algorithm,
    ) {
        match self.sasl.mechanism {
            Mechanism::ScramSha512 => (
                pbkdf2::PBKDF2_HMAC_SHA512,
                hmac::HMAC_SHA512,
                &digest::SHA512,
            ),
            _ => (
                pbkdf2::PBKDF2_HMAC_SHA256,
                hmac::HMAC_SHA256,
                &digest::SHA256,
            ),
        }
    }

    /// The client's final message for the server's first.
    fn client_final(&mut self, server_first: &str) -> Result<String> {
        let bad = |why: &str| Error::Auth(format!("SCRAM: the broker's first message {why}"));
        let field = |name: char| {
            server_first
                .split(',')
                .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        let nonce = field('r').ok_or_else(|| bad("has no nonce"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(bad("does not extend our nonce"));
        }
        let salt = B64
            .decode(field('s').ok_or_else(|| bad("has no salt"))?)
            .map_err(|_| bad("has a salt that is not base64"))?;
        let iterations: u32 = field('i')
            .and_then(|i| i.parse().ok())
            .filter(|&i| i > 0)
            .ok_or_else(|| bad("has no iteration count"))?;
        let (kdf, mac, hash) = self.algorithms();
        let mut salted = vec![0u8; hash.output_len()];
        pbkdf2::derive(
            kdf,
            std::num::NonZeroU32::new(iterations).expect("checked above"),
            &salt,
            self.sasl.password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(hash, client_key.as_ref());
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(mac, stored_key.as_ref()),
            auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        self.server_signature = hmac::sign(
            &hmac::Key::new(mac, server_key.as_ref()),
            auth_message.as_bytes(),
        )
        .as_ref()
        .to_vec();
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// The server proves it knew the password too.
    fn check_server_final(&self, server_final: &str) -> Result<()> {
        if let Some(e) = server_final.strip_prefix("e=") {
            return Err(Error::Auth(format!("SCRAM: the broker refused: {e}")));
        }
        let signature = server_final
            .split(',')
            .find_map(|f| f.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok());
        if signature.as_deref() != Some(self.server_signature.as_slice()) {
            return Err(Error::Auth(
                "SCRAM: the broker's final message does not prove it knows the password".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example exchange.
    #[test]
    fn scram_sha_256_matches_rfc_7677() {
        let sasl = Sasl {
            mechanism: Mechanism::ScramSha256,
            username: "user".into(),
            password: "pencil".into(),
        };
        let mut scram = Scram::new(&sasl, "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            scram.client_final(server_first).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        scram
            .check_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        let err = scram
            .check_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap_err();
        assert!(err.to_string().contains("does not prove"), "{err}");
    }

    #[test]
    fn a_server_nonce_that_does_not_extend_ours_is_refused() {
        let sasl = Sasl {
            mechanism: Mechanism::ScramSha512,
            username: "u,=x".into(),
            password: "p".into(),
        };
        let mut scram = Scram::new(&sasl, "abc");
        assert_eq!(scram.client_first(), "n,,n=u=2C=3Dx,r=abc");
        assert!(scram.client_final("r=xyz123,s=c2FsdA==,i=10").is_err());
        assert!(scram.client_final("r=abcdef,s=c2FsdA==,i=10").is_ok());
        assert!(!format!("{sasl:?}").contains("\"p\""));
    }
}
