//! Responses the router writes itself: JSON errors with a stable code and a human message.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;

/// An error the router answers on its own, instead of a deployment's response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `RequestTimeout`.
    pub code: &'static str,
    /// What happened, for a person.
    pub message: String,
}

impl RouterError {
    /// An error with the given status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// `{"error": {"code": ..., "message": ...}}` with the status, plus the headers that status
    /// calls for.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        match self.status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn renders_json_with_escaping() {
        let r = RouterError::new(StatusCode::GATEWAY_TIMEOUT, "RequestTimeout", "a \"quoted\" name").into_response();
        assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "RequestTimeout");
        assert_eq!(v["error"]["message"], "a \"quoted\" name");
    }
}
