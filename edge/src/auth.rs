//! Who is calling: the virtual key from `Authorization: Bearer` or `x-api-key`, looked up by its
//! SHA-256 in the current config.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use llmgw_shared::keys::hash_secret;

use crate::config::{EdgeConfig, KeyEntry};
use crate::error::ApiError;

fn presented_secret(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, rest) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|s| !s.is_empty());
    }
    headers.get("x-api-key")?.to_str().ok().map(str::trim).filter(|s| !s.is_empty())
}

/// # Errors
/// 401 for a missing, unknown, revoked or expired key.
pub fn authenticate(config: &EdgeConfig, headers: &HeaderMap) -> Result<Arc<KeyEntry>, ApiError> {
    let secret = presented_secret(headers).ok_or(ApiError::MissingKey)?;
    let key = config.keys.get(&hash_secret(secret)).ok_or(ApiError::InvalidKey)?;
    if key.revoked {
        return Err(ApiError::KeyRevoked);
    }
    if key.expires_at != 0 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        if now >= key.expires_at {
            return Err(ApiError::KeyExpired);
        }
    }
    Ok(key.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_and_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-1".parse().unwrap());
        assert_eq!(presented_secret(&h), Some("sk-1"));
        h.insert("authorization", "bearer   sk-2 ".parse().unwrap());
        assert_eq!(presented_secret(&h), Some("sk-2"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(presented_secret(&h), None);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "sk-3".parse().unwrap());
        assert_eq!(presented_secret(&h), Some("sk-3"));
        assert_eq!(presented_secret(&HeaderMap::new()), None);
    }
}
