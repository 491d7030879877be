//! API errors in each API's shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::worker::Api;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// `anthropic` shapes the body as Anthropic's; everything else is OpenAI's.
    pub anthropic: bool,
    /// OpenAI `type` (Anthropic errors map it to their own names).
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<&'static str>,
    /// Context overflow details.
    pub overflow: Option<(usize, usize)>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            anthropic: false,
            kind,
            code: None,
            param: None,
            overflow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn for_api(mut self, api: Api) -> Self {
        self.anthropic = api == Api::Messages;
        self
    }

    pub fn context_overflow(n_prompt: usize, n_ctx: usize, param: &'static str) -> Self {
        Self {
            code: Some("context_length_exceeded"),
            param: Some(param),
            overflow: Some((n_prompt, n_ctx)),
            ..Self::bad_request(format!(
                "Prompt has {n_prompt} tokens, but the configured context size is {n_ctx} tokens"
            ))
        }
    }

    pub fn body(&self) -> Value {
        if self.anthropic {
            let kind = match self.kind {
                "invalid_request_error" => "invalid_request_error",
                "authentication_error" => "authentication_error",
                "rate_limit_error" => "rate_limit_error",
                "not_found_error" => "not_found_error",
                "overloaded_error" => "overloaded_error",
                _ => "api_error",
            };
            let mut e = json!({"type": kind, "message": self.message});
            if let Some((n, c)) = self.overflow {
                e["n_prompt_tokens"] = n.into();
                e["n_ctx"] = c.into();
            }
            json!({"type": "error", "error": e})
        } else {
            let mut e = json!({"message": self.message, "type": self.kind});
            if let Some(p) = self.param {
                e["param"] = p.into();
            }
            if let Some(c) = self.code {
                e["code"] = c.into();
            }
            if let Some((n, c)) = self.overflow {
                e["n_prompt_tokens"] = n.into();
                e["n_ctx"] = c.into();
            }
            json!({ "error": e })
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// A JSON body that failed to parse into the request type.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    ApiError::bad_request(format!("invalid JSON request: {e}"))
}
