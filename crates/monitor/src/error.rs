//! What can go wrong in the monitor: starting it (a tokens file, an address, the store) and
//! answering a request ([`AppError`], one shape for every HTTP error).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

/// A monitor error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading runs, models or summaries failed.
    #[error(transparent)]
    Jobs(#[from] fleetscore_jobs::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] fleetscore_store::Error),
    /// A tokens file that cannot be used.
    #[error(transparent)]
    Tokens(#[from] fleetscore_core::tokens::TokensError),
    /// A setting that cannot work (listening on a public address without tokens, ...).
    #[error("{0}")]
    Config(String),
}

/// A monitor result.
pub type Result<T> = std::result::Result<T, Error>;

/// An HTTP error: a status and a message, as JSON (`{"error": "..."}`) for the API or as a
/// page for the dashboard. Server errors answer a generic message; the detail goes to the log.
#[derive(Debug)]
pub struct AppError {
    status: StatusCode,
    message: String,
    page: bool,
}

impl AppError {
    /// 404, naming what was not found.
    pub fn not_found(what: impl Into<String>) -> AppError {
        AppError {
            status: StatusCode::NOT_FOUND,
            message: what.into(),
            page: false,
        }
    }

    /// 400, saying what was wrong with the request.
    pub fn bad_request(message: impl Into<String>) -> AppError {
        AppError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            page: false,
        }
    }

    /// 500: `detail` is logged, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> AppError {
        tracing::error!("monitor request failed: {detail}");
        AppError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: "internal error; the detail is in the monitor's log".into(),
            page: false,
        }
    }

    /// The same error, answered as a dashboard page.
    pub fn page(mut self) -> AppError {
        self.page = true;
        self
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<fleetscore_jobs::Error> for AppError {
    fn from(e: fleetscore_jobs::Error) -> AppError {
        AppError::internal(e)
    }
}

impl From<fleetscore_store::Error> for AppError {
    fn from(e: fleetscore_store::Error) -> AppError {
        AppError::internal(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.page {
            let body = crate::pages::error_page(self.status, &self.message);
            return (self.status, Html(body.into_string())).into_response();
        }
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}
