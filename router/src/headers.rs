//! Header handling between callers and deployments.

use std::net::IpAddr;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};

/// Names the deployment a request should go to, bypassing the traffic split; also set on every
/// proxied response to say which deployment answered (as Azure ML does).
pub const DEPLOYMENT: HeaderName = HeaderName::from_static("azureml-model-deployment");
/// Correlates the access log, the deployment's logs and the caller. Kept when the caller sends it.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The chain of client addresses.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); a proxy must not
/// forward them. HTTP/2 forbids most of them outright.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the `Connection` header lists. `Upgrade` goes too:
/// the router does not tunnel protocol upgrades.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Collected first because removing while iterating `get_all` is not possible; allocates only
    // when a Connection header is present.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Prepares a caller's headers for a deployment: no hop-by-hop headers, no `Host` (the client sets
/// the deployment's), no `Expect`, the caller's address appended to `X-Forwarded-For`, and — when the router
/// checked it — no `Authorization`: the endpoint key is the router's business, and scoring code
/// should never see it.
pub fn to_upstream(headers: &mut HeaderMap, client: IpAddr, strip_authorization: bool) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    // The router's server answered `Expect: 100-continue` already (when it first read the body);
    // the deployment gets the body without waiting.
    headers.remove(header::EXPECT);
    if strip_authorization {
        headers.remove(header::AUTHORIZATION);
    }
    let forwarded = match headers.get(FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) => format!("{prior}, {client}"),
        None => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(FORWARDED_FOR, value);
    }
}

/// The caller's request id, or a new random one.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(REQUEST_ID).filter(|v| !v.is_empty() && v.len() <= 128) {
        return id.clone();
    }
    let id = format!("{:032x}", rand::random::<u128>());
    // 32 hex digits are always a valid header value.
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn prepares_upstream_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("endpoint.example"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        h.insert(FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        to_upstream(&mut h, "127.0.0.1".parse().unwrap(), true);
        assert!(!h.contains_key(header::HOST) && !h.contains_key(header::AUTHORIZATION));
        assert!(!h.contains_key(header::EXPECT));
        assert_eq!(h[FORWARDED_FOR], "10.0.0.1, 127.0.0.1");

        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer app-token"));
        to_upstream(&mut h, "::1".parse().unwrap(), false);
        assert_eq!(h[header::AUTHORIZATION], "Bearer app-token");
        assert_eq!(h[FORWARDED_FOR], "::1");
    }

    #[test]
    fn keeps_or_makes_request_ids() {
        let mut h = HeaderMap::new();
        let made = request_id(&h);
        assert_eq!(made.len(), 32);
        assert_ne!(made, request_id(&h));
        h.insert(REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(request_id(&h), "abc");
    }
}
