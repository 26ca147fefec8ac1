//! Provider credentials sealed at rest with AES-256-GCM under `LLMGW_MASTER_KEY`.

use aes_gcm::aead::{Aead, KeyInit, OsRng, rand_core::RngCore};
use aes_gcm::{Aes256Gcm, Nonce};
use llmgw_shared::proto::SealedValue;
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("LLMGW_MASTER_KEY must be 32 bytes written as 64 hex characters")]
    BadKey,
    #[error("a credential sealed under master key {0} cannot be opened with master key {1}")]
    WrongKey(String, String),
    #[error("a sealed credential failed authentication (corrupted or tampered with)")]
    Corrupt,
    #[error("no LLMGW_MASTER_KEY is set, so credentials given as value: cannot be sealed")]
    NoKey,
}

/// The master key; `Debug` never shows it.
pub struct MasterKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    /// # Errors
    /// A key that is not 64 hex characters.
    pub fn from_hex(hex_key: &str) -> Result<Self, SealError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| SealError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?;
        // Names the key in sealed values, so a wrong key is reported as such, not as corruption.
        let id = hex::encode(&Sha256::digest(&bytes)[..4]);
        Ok(Self { cipher, id })
    }

    /// A fresh random key, hex-encoded, for `llmgw dev`.
    #[must_use]
    pub fn generate_hex() -> String {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        hex::encode(k)
    }

    /// # Errors
    /// Never in practice: AES-GCM encryption of a short value cannot fail.
    pub fn seal(&self, plaintext: &str) -> Result<SealedValue, SealError> {
        let mut nonce = [0u8; 12];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .map_err(|_| SealError::Corrupt)?;
        Ok(SealedValue { nonce: nonce.to_vec(), ciphertext, key_id: self.id.clone() })
    }

    /// # Errors
    /// A value sealed under another key, or one that fails authentication.
    pub fn open(&self, sealed: &SealedValue) -> Result<String, SealError> {
        if !sealed.key_id.is_empty() && sealed.key_id != self.id {
            return Err(SealError::WrongKey(sealed.key_id.clone(), self.id.clone()));
        }
        if sealed.nonce.len() != 12 {
            return Err(SealError::Corrupt);
        }
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), sealed.ciphertext.as_slice())
            .map_err(|_| SealError::Corrupt)?;
        String::from_utf8(plain).map_err(|_| SealError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let k = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        let s = k.seal("sk-upstream").unwrap();
        assert!(!s.ciphertext.windows(11).any(|w| w == b"sk-upstream"));
        assert_eq!(k.open(&s).unwrap(), "sk-upstream");
        let other = MasterKey::from_hex(&MasterKey::generate_hex()).unwrap();
        assert!(matches!(other.open(&s), Err(SealError::WrongKey(..))));
        let mut bad = s.clone();
        bad.ciphertext[0] ^= 1;
        assert!(matches!(k.open(&bad), Err(SealError::Corrupt)));
        assert!(MasterKey::from_hex("abcd").is_err());
    }
}
