//! Virtual-key secrets: only their SHA-256 is ever stored or compared.

use sha2::{Digest, Sha256};

/// Every generated secret starts with this, so leaked keys are easy to scan for.
pub const SECRET_PREFIX: &str = "sk-llmgw-";

/// The SHA-256 of a virtual-key secret: the only form in which a secret is stored.
#[must_use]
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256() {
        assert_eq!(
            hex::encode(hash_secret("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
