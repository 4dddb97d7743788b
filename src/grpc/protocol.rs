//! What a request must be before any RPC reads it (the body's framing is `framing.rs`): gRPC's content
//! type, and one value of each header that says who is calling, where and as which call. With two values
//! the first would win, so a proxy that checks the other could be fooled.

use http::HeaderMap;
use http::header::CONTENT_TYPE;
use tonic::Status;

use super::context::{ACTOR_HEADER, CAMPAIGN_HEADER};
use super::middleware::REQUEST_ID_HEADER;
use super::status::header_refusal;
use crate::error::Reason;

/// The headers that may come at most once.
const SINGLE_HEADERS: [&str; 4] = [
    "authorization",
    CAMPAIGN_HEADER,
    ACTOR_HEADER,
    REQUEST_ID_HEADER,
];

/// One `content-type`, `application/grpc` or `application/grpc+proto` (parameters allowed). Anything
/// else is refused with HTTP 415 (the gRPC spec's answer), so that no plain HTTP client mistakes the
/// refusal for a success.
pub(super) fn content_type(headers: &HeaderMap) -> Result<(), Status> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    match (values.next(), values.next()) {
        (Some(value), None) if is_grpc(value.as_bytes()) => Ok(()),
        (value, _) => {
            let sent = value.map_or_else(
                || "none".to_owned(),
                |v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())),
            );
            Err(header_refusal(
                Reason::UnsupportedContentType,
                CONTENT_TYPE.as_str(),
                format!(
                    "this is a gRPC service: send content-type application/grpc (or \
                     application/grpc+proto), once; the request had {sent}"
                ),
            ))
        }
    }
}

fn is_grpc(value: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/grpc")
        || media_type.eq_ignore_ascii_case("application/grpc+proto")
}

/// Refuses a request that sends any of [`SINGLE_HEADERS`] more than once, naming it.
pub(super) fn single_headers(headers: &HeaderMap) -> Result<(), Status> {
    match SINGLE_HEADERS
        .iter()
        .find(|name| headers.get_all(**name).iter().nth(1).is_some())
    {
        None => Ok(()),
        Some(name) => Err(header_refusal(
            Reason::DuplicateHeader,
            name,
            format!("the {name} header was sent more than once; send it once"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_grpc_content_types_are_served() {
        for ok in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC; charset=utf-8",
        ] {
            assert!(content_type(&with(&[("content-type", ok)])).is_ok(), "{ok}");
        }
        for refused in [
            "application/json",
            "application/grpc+json",
            "application/grpc-web",
            "text/plain",
            "",
        ] {
            let status = content_type(&with(&[("content-type", refused)])).unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{refused}");
        }
        assert!(content_type(&HeaderMap::new()).is_err());
        let twice = with(&[
            ("content-type", "application/grpc"),
            ("content-type", "application/json"),
        ]);
        assert!(content_type(&twice).is_err());
    }

    #[test]
    fn a_header_that_says_who_calls_may_come_once() {
        assert!(single_headers(&with(&[("x-actor-id", "adm"), ("x-campaign-id", "c")])).is_ok());
        for name in SINGLE_HEADERS {
            let headers = with(&[(name, "a"), (name, "b")]);
            let status = single_headers(&headers).unwrap_err();
            assert!(status.message().contains(name), "{status:?}");
        }
        // Other headers may repeat.
        assert!(single_headers(&with(&[("x-other", "a"), ("x-other", "b")])).is_ok());
    }
}
