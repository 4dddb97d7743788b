//! Page sizes and opaque page tokens for the List RPCs.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::{AppError, AppResult};

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

/// 0 means the default; larger than the maximum is capped; negative is an error.
pub fn page_size(requested: i32) -> AppResult<i64> {
    match i64::from(requested) {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(AppError::invalid(
            "page_size",
            format!("page_size must not be negative (got {n})"),
        )),
        n => Ok(n.min(MAX_PAGE_SIZE)),
    }
}

/// A token names the last key of the previous page; `kind` stops tokens being reused across RPCs.
pub fn encode_token(kind: &str, last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{last_key}"))
}

/// The last key of the previous page, or `None` for the first page.
pub fn decode_token(kind: &str, token: &str) -> AppResult<Option<String>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        AppError::invalid(
            "page_token",
            "page_token is not one this RPC returned; pass next_page_token unchanged or leave it empty",
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let key = text
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    Ok(Some(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_caps_and_rejects_negative() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(100_000).unwrap(), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn tokens_round_trip_and_are_bound_to_their_rpc() {
        let token = encode_token("conv", "c:42");
        assert_eq!(decode_token("conv", &token).unwrap(), Some("c:42".into()));
        assert_eq!(decode_token("conv", "").unwrap(), None);
        assert!(decode_token("event", &token).is_err());
        assert!(decode_token("conv", "%%%").is_err());
    }
}
