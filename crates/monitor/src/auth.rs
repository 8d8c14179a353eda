//! Who may read: the bearer tokens of `--tokens`, checked as ingest checks them
//! (`fleetscore_core::tokens`). Scripts send `Authorization: Bearer <token>`; a browser, which
//! cannot add that header to a link, signs in once on `/login` and then sends the token in an
//! HTTP-only, same-site cookie.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::Monitor;

/// The cookie a signed-in browser sends.
const COOKIE: &str = "fleetscore_token";

/// Lets a request through if no tokens are configured or it presents a known one; otherwise
/// 401 (JSON for the API and `/metrics`, the sign-in page for the dashboard).
pub(crate) async fn require_token(
    State(monitor): State<Arc<Monitor>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(tokens) = &monitor.tokens else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| tokens.authorize(v));
    let cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .find_map(|secret| tokens.find(secret))
    };
    if bearer.or_else(cookie).is_some() {
        return next.run(req).await;
    }
    let path = req.uri().path();
    let mut r = if path.starts_with("/api/") || path == "/metrics" {
        (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": "send a bearer token: Authorization: Bearer <token>"
            })),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Html(crate::pages::login_page(path, false).into_string()),
        )
            .into_response()
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"fleetscore\""),
    );
    r
}

/// The sign-in form.
pub(crate) async fn login_page() -> Html<String> {
    Html(crate::pages::login_page("/", false).into_string())
}

/// What the sign-in form posts.
#[derive(Deserialize)]
pub(crate) struct Login {
    token: String,
    #[serde(default)]
    next: String,
}

/// Checks a token from the form and sets the cookie.
pub(crate) async fn login(
    State(monitor): State<Arc<Monitor>>,
    Form(form): Form<Login>,
) -> Response {
    let known = monitor
        .tokens
        .as_ref()
        .is_none_or(|t| t.find(form.token.trim()).is_some());
    if !known {
        return (
            StatusCode::UNAUTHORIZED,
            Html(crate::pages::login_page(&form.next, true).into_string()),
        )
            .into_response();
    }
    // Only a path on this site: never an open redirect.
    let next = if form.next.starts_with('/') && !form.next.starts_with("//") {
        form.next.as_str()
    } else {
        "/"
    };
    let mut r = Redirect::to(next).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        form.token.trim()
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}
