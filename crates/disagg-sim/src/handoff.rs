//! The context → generation hand-off, made unforgeable.
//!
//! A real generation server fetches the KV cache the context server computed; it can only do so
//! for a request that context server really ran. The simulator stands that in with a keyed
//! digest: the context leg issues `encoded_opaque_state` = base64 of
//! `{"issuer", "ctx_request_id", "first_token", "prompt_tokens", "mac"}` where `mac` is
//! HMAC-SHA256 over issuer, request id, first token and every prompt token id, under a key all
//! simulators of one test share (`--handoff-key`). A generation leg recomputes the digest from
//! the prompt it was sent; a missing, altered or replayed-onto-another-prompt state is refused.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The key used when none is given.
pub const DEFAULT_KEY: &str = "disagg-sim-default-handoff-key";

/// What a context leg hands over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The context server that issued it.
    pub issuer: String,
    /// Its request id.
    pub ctx_request_id: u64,
    /// The first generated token.
    pub first_token: u32,
    /// Prompt length (for the transfer cost and a quick check).
    pub prompt_tokens: u32,
    /// Hex HMAC.
    pub mac: String,
}

/// Why a hand-off was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// Not base64 JSON of the expected shape.
    #[error("encoded_opaque_state is not a hand-off issued by a disagg sim context server")]
    Malformed,
    /// The digest does not match this prompt.
    #[error(
        "the hand-off was not issued by a context server for this prompt \
         (ctx_request_id {ctx_request_id} from {issuer}); send the generation request the context's prompt_token_ids"
    )]
    Forged {
        /// Claimed issuer.
        issuer: String,
        /// Claimed id.
        ctx_request_id: u64,
    },
}

fn mac(key: &[u8], issuer: &str, id: u64, first: u32, prompt: &[u32]) -> HmacSha256 {
    // HMAC accepts keys of any length, so the fallback is never taken.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
    m.update(&(issuer.len() as u64).to_le_bytes());
    m.update(issuer.as_bytes());
    m.update(&id.to_le_bytes());
    m.update(&first.to_le_bytes());
    for t in prompt {
        m.update(&t.to_le_bytes());
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Issue the opaque state for a context leg.
pub fn issue(
    key: &[u8],
    issuer: &str,
    ctx_request_id: u64,
    first_token: u32,
    prompt: &[u32],
) -> String {
    let digest = mac(key, issuer, ctx_request_id, first_token, prompt)
        .finalize()
        .into_bytes();
    let h = Handoff {
        issuer: issuer.to_string(),
        ctx_request_id,
        first_token,
        prompt_tokens: prompt.len() as u32,
        mac: hex(&digest),
    };
    STANDARD.encode(serde_json::to_vec(&h).unwrap_or_default())
}

/// Check a generation leg's opaque state against the prompt it carries.
pub fn verify(key: &[u8], encoded: &str, prompt: &[u32]) -> Result<Handoff, HandoffError> {
    let raw = STANDARD
        .decode(encoded)
        .map_err(|_| HandoffError::Malformed)?;
    let h: Handoff = serde_json::from_slice(&raw).map_err(|_| HandoffError::Malformed)?;
    let tag = unhex(&h.mac).ok_or(HandoffError::Malformed)?;
    let forged = || HandoffError::Forged {
        issuer: h.issuer.clone(),
        ctx_request_id: h.ctx_request_id,
    };
    if h.prompt_tokens as usize != prompt.len() {
        return Err(forged());
    }
    mac(key, &h.issuer, h.ctx_request_id, h.first_token, prompt)
        .verify_slice(&tag)
        .map_err(|_| forged())?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_state_verifies_for_its_prompt_only() {
        let key = b"k";
        let s = issue(key, "ctx-a", 42, 7, &[1, 2, 3]);
        let h = verify(key, &s, &[1, 2, 3]).unwrap();
        assert_eq!((h.ctx_request_id, h.first_token), (42, 7));
        assert!(matches!(
            verify(key, &s, &[1, 2, 4]),
            Err(HandoffError::Forged { .. })
        ));
        assert!(matches!(
            verify(b"other", &s, &[1, 2, 3]),
            Err(HandoffError::Forged { .. })
        ));
        assert_eq!(
            verify(key, "not base64!", &[1]),
            Err(HandoffError::Malformed)
        );
    }

    #[test]
    fn changing_any_field_breaks_the_digest() {
        let key = b"k";
        let s = issue(key, "ctx-a", 42, 7, &[1, 2, 3]);
        let mut h: Handoff = serde_json::from_slice(&STANDARD.decode(&s).unwrap()).unwrap();
        h.first_token = 8;
        let tampered = STANDARD.encode(serde_json::to_vec(&h).unwrap());
        assert!(matches!(
            verify(key, &tampered, &[1, 2, 3]),
            Err(HandoffError::Forged { .. })
        ));
    }
}
