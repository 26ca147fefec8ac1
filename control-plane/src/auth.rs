//! Bearer tokens for the admin API and for edges. Only SHA-256 digests are kept, and compared:
//! equal-length digests of a secret leak nothing useful through comparison timing.

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// Who made an admin call: the token's id (never the token), for the audit log.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

#[derive(Clone)]
pub struct TokenCheck {
    digests: Vec<[u8; 32]>,
    what: &'static str,
}

impl TokenCheck {
    /// `None` accepts any caller (edges when no LLMGW_EDGE_TOKEN is set).
    #[must_use]
    pub fn new(tokens: &[String], what: &'static str) -> Self {
        Self { digests: tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect(), what }
    }

    #[must_use]
    pub fn token_id(token: &str) -> String {
        format!("token:{}", hex::encode(&Sha256::digest(token.as_bytes())[..4]))
    }

    /// # Errors
    /// `Unauthenticated` for a missing or wrong token.
    pub fn check(&self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if self.digests.is_empty() {
            req.extensions_mut().insert(Actor("anonymous".into()));
            return Ok(req);
        }
        let token = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(|t| t.trim().to_owned())
            .ok_or_else(|| Status::unauthenticated(format!("missing {} token", self.what)))?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !self.digests.contains(&digest) {
            return Err(Status::unauthenticated(format!("invalid {} token", self.what)));
        }
        req.extensions_mut().insert(Actor(Self::token_id(&token)));
        Ok(req)
    }
}
