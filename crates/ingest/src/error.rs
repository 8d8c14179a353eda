//! What can go wrong in ingest, naming the setting, file, address or broker answer.

use std::fmt;

use crate::kafka::KafkaCode;

/// An ingest error.
///
/// Messages name what was wrong; a wrapped cause (an operating system error, the log's error)
/// is the error's [`source`](std::error::Error::source), not repeated in its message, so that
/// `anyhow`'s `{:#}` and [`Report`] print each part once.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work: a source URL, a topic pattern, a consumer group, listening
    /// on a public address without tokens.
    #[error("{0}")]
    Config(String),
    /// A tokens file that cannot be read, is not one, or holds a token too short to be secret.
    #[error(transparent)]
    Tokens(#[from] fleetscore_core::tokens::TokensError),
    /// An operating system call failed: what was being done, to which file or address.
    #[error("{what}")]
    Io {
        /// What was being done, e.g. `cannot listen on 0.0.0.0:8086`, or the broker's address.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS handshake with a broker failed: an unknown CA, a certificate for another name, a
    /// broker that does not speak TLS on that port.
    #[error("{what}: {reason}")]
    Tls {
        /// The broker, e.g. `broker:9093: TLS`.
        what: String,
        /// Why, in one line.
        reason: String,
    },
    /// A broker refused our credentials (SASL), or could not prove it knew them (SCRAM).
    #[error("{0}")]
    Auth(String),
    /// A broker did not connect or answer in time.
    #[error("{what}: timed out")]
    TimedOut {
        /// What was waited for, e.g. `connecting to 127.0.0.1:9092`.
        what: String,
    },
    /// A Kafka broker answered with an error code. Retry logic matches on `code`.
    #[error("{what}: broker answered {code}")]
    Kafka {
        /// The request, e.g. `heartbeat` or `fetching partition 2`.
        what: String,
        /// The code it answered.
        code: KafkaCode,
    },
    /// A Kafka answer that cannot be used: cut short, malformed, a record batch in a format or
    /// compression not read, or without what was asked (a topic's partitions, a leader).
    #[error("{what}: {reason}")]
    Protocol {
        /// The answer or record batch, e.g. `metadata` or `record batch at offset 42`.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The log did not store readings (which are then not acknowledged).
    #[error("readings not stored")]
    Log(#[from] fleetscore_log::Error),
}

/// An ingest result.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The code a Kafka broker answered, if that is what this error is.
    pub fn kafka_code(&self) -> Option<KafkaCode> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// An error and its causes on one line (`readings not stored: the log is closed`), for log
/// messages.
pub struct Report<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}
