//! Refusals: every error a route answers, mapped in one place to a status and an OpenAI-shaped
//! body.

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use disagg_protocol::ErrorResponse;

use super::AppState;

/// An error answered with an OpenAI-shaped body.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl ApiError {
    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            400..=499 => "invalid_request_error",
            _ => "server_error",
        };
        tracing::debug!(status = self.status.as_u16(), message = %self.message, "request refused");
        let body = ErrorResponse::new(self.message, kind, self.status.as_u16());
        (self.status, axum::Json(body)).into_response()
    }
}

/// Count a refused request (for `/metrics`) and pass the error on.
pub(super) fn refused(st: &AppState, e: ApiError) -> ApiError {
    st.counters.client_errors.fetch_add(1, Ordering::Relaxed);
    e
}
