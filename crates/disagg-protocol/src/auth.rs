//! Internal request authentication between a TensorRT-LLM coordinator and its workers, as
//! upstream's `tensorrt_llm/serve/disagg_auth.py` defines it.
//!
//! A request whose `disaggregated_params` carries `ctx_info_endpoint` or `encoded_opaque_state`
//! (what lets a generation worker pull a context worker's KV cache) is signed with
//! `x-trtllm-disagg-auth: sha256=<hex HMAC-SHA256(key, payload)>`, where the payload is the
//! canonical JSON `{"ctx_info_endpoint":…,"encoded_opaque_state":…}` — Python's
//! `json.dumps(payload, sort_keys=True, separators=(",", ":"))`, so keys sorted, no spaces and
//! every non-ASCII character escaped as `\uXXXX` — with a list endpoint reduced to its first
//! element. A worker with a key refuses a request with those fields and a missing or wrong
//! signature. Requests without them (every context leg) carry no signature.
//!
//! ```
//! use disagg_protocol::auth::{Signed, check, sign};
//! use serde_json::json;
//! let params = json!({"request_type": "generation_only", "encoded_opaque_state": "b3BhcXVl"});
//! let header = sign("secret", &params).expect("protected fields are signed");
//! assert!(header.starts_with("sha256="));
//! assert_eq!(check("secret", Signed::of(&params), Some(header.as_bytes())), Ok(()));
//! assert!(check("other", Signed::of(&params), Some(header.as_bytes())).is_err());
//! ```

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::DisaggregatedParams;

/// The header a signature travels in (upstream `INTERNAL_DISAGG_AUTH_HEADER`).
pub const INTERNAL_AUTH_HEADER: &str = "x-trtllm-disagg-auth";

const PREFIX: &str = "sha256=";

/// The two fields a signature covers, as one request carries them (absent = null).
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    ctx_info_endpoint: &'a Value,
    encoded_opaque_state: &'a Value,
}

impl<'a> Signed<'a> {
    /// The two fields, as values (null when absent).
    pub fn new(ctx_info_endpoint: &'a Value, encoded_opaque_state: &'a Value) -> Signed<'a> {
        Signed {
            ctx_info_endpoint,
            encoded_opaque_state,
        }
    }

    /// The fields of a `disaggregated_params` object (null or not an object: none).
    pub fn of(params: &'a Value) -> Signed<'a> {
        Signed {
            ctx_info_endpoint: params.get("ctx_info_endpoint").unwrap_or(&Value::Null),
            encoded_opaque_state: params.get("encoded_opaque_state").unwrap_or(&Value::Null),
        }
    }

    /// Whether a signature is required: either field is present and not null (upstream checks
    /// `is not None`, so an empty list endpoint counts).
    pub fn required(self) -> bool {
        !self.ctx_info_endpoint.is_null() || !self.encoded_opaque_state.is_null()
    }

    /// The canonical JSON the HMAC is computed over.
    pub fn payload(self) -> String {
        let endpoint = match self.ctx_info_endpoint {
            Value::Array(items) => items.first().unwrap_or(&Value::Null),
            other => other,
        };
        // Written by hand in sorted key order: serde_json's map order depends on a cargo
        // feature (`preserve_order`) another crate of the build could turn on.
        let text = format!(
            "{{\"ctx_info_endpoint\":{},\"encoded_opaque_state\":{}}}",
            canonical(endpoint),
            canonical(self.encoded_opaque_state)
        );
        ascii_escaped(&text)
    }
}

impl DisaggregatedParams {
    /// The fields a signature covers, as JSON values (null when absent).
    pub fn signed_fields(&self) -> (Value, Value) {
        (
            self.extra
                .get("ctx_info_endpoint")
                .cloned()
                .unwrap_or(Value::Null),
            self.encoded_opaque_state
                .clone()
                .map_or(Value::Null, Value::String),
        )
    }
}

/// A value as `json.dumps(..., sort_keys=True, separators=(",", ":"))` writes it (before the
/// ASCII escaping): objects with sorted keys, whatever serde_json's map order.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let body: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), canonical(v)))
                .collect();
            format!("{{{}}}", body.join(","))
        }
        Value::Array(items) => {
            let body: Vec<String> = items.iter().map(canonical).collect();
            format!("[{}]", body.join(","))
        }
        other => other.to_string(),
    }
}

/// Python's `ensure_ascii`: every non-ASCII character as `\uXXXX` (UTF-16, lower-case hex).
/// Non-ASCII characters only occur inside strings in JSON text, so escaping them all is safe.
fn ascii_escaped(text: &str) -> String {
    if text.is_ascii() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The header value for `fields` under `key`: `sha256=<64 hex digits>`.
pub fn signature(key: &str, fields: Signed<'_>) -> String {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()));
    mac.update(fields.payload().as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(PREFIX.len() + 64);
    out.push_str(PREFIX);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The signature a coordinator sends with a request whose `disaggregated_params` are
/// `params`, or `None` when they hold nothing that needs one.
pub fn sign(key: &str, params: &Value) -> Option<String> {
    let fields = Signed::of(params);
    fields.required().then(|| signature(key, fields))
}

/// Why a worker refused a request's signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Protected fields, no header.
    #[error(
        "Invalid internal disaggregated request authentication: the request carries \
         disaggregated_params.ctx_info_endpoint/encoded_opaque_state but no {INTERNAL_AUTH_HEADER} \
         header; this worker has internal_request_auth_key set, so its coordinator must sign \
         generation requests with the same key (internal_request_auth_key in its config)"
    )]
    Missing,
    /// A header that is not the signature of these fields under this worker's key.
    #[error(
        "Invalid internal disaggregated request authentication: the {INTERNAL_AUTH_HEADER} \
         header does not match (the coordinator signs with another internal_request_auth_key, \
         or the hand-off was altered on the way)"
    )]
    Mismatch,
}

/// A worker's check of one request: nothing to check without protected fields; else the
/// header must be exactly the signature under `key` (compared in constant time, as upstream's
/// `hmac.compare_digest`).
pub fn check(key: &str, fields: Signed<'_>, header: Option<&[u8]>) -> Result<(), AuthError> {
    if !fields.required() {
        return Ok(());
    }
    let provided = header.ok_or(AuthError::Missing)?;
    let expected = signature(key, fields);
    if same(provided, expected.as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::Mismatch)
    }
}

/// Equal bytes, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // Expected values computed with Python's hmac/hashlib/json exactly as disagg_auth.py does:
    // "sha256=" + hmac.new(key.encode(), json.dumps({"ctx_info_endpoint": ep,
    // "encoded_opaque_state": st}, sort_keys=True, separators=(",", ":")).encode(),
    // hashlib.sha256).hexdigest()
    #[test]
    fn signatures_equal_pythons() {
        let cases = [
            (
                "secret",
                json!({"ctx_info_endpoint": "tcp://10.0.0.1:5000", "encoded_opaque_state": "b3BhcXVl"}),
                "sha256=2c855337a244b082618df980f3ca112bdd1d90f76609d813aef90813a9cf64b9",
            ),
            (
                "secret",
                json!({"request_type": "generation_only", "encoded_opaque_state": "b3BhcXVl"}),
                "sha256=dd0226a7360fb1d422781ed05d4db132774395583e9f79091e0113371cae3257",
            ),
            // A list endpoint is signed as its first element; an empty list as null.
            (
                "secret",
                json!({"ctx_info_endpoint": ["tcp://a:1", "tcp://b:2"]}),
                "sha256=e877ef5cc54e128883ce09e854e1ba17315067f05353cefd9c01ee51b562eef8",
            ),
            (
                "secret",
                json!({"ctx_info_endpoint": [], "encoded_opaque_state": "x"}),
                "sha256=b6095db594d52be3b4dd1c5285484e3759837929e37fadda85a7fc52dd61d5ed",
            ),
            // Non-ASCII as \uXXXX (a surrogate pair past the BMP), control characters escaped.
            (
                "k\u{e9}y",
                json!({"ctx_info_endpoint": "h\u{f4}te-\u{1F600}\n\""}),
                "sha256=5ee4d83b760c1f63f5f0a5de28c1fa488796b90f53e5fdc152cf8c328e1a19bd",
            ),
        ];
        for (key, params, want) in cases {
            assert_eq!(sign(key, &params).as_deref(), Some(want), "{params}");
        }
        assert_eq!(
            Signed::of(&json!({"ctx_info_endpoint": "h\u{f4}te-\u{1F600}"})).payload(),
            r#"{"ctx_info_endpoint":"h\u00f4te-\ud83d\ude00","encoded_opaque_state":null}"#
        );
    }

    #[test]
    fn only_protected_fields_need_a_signature() {
        let ctx_leg = json!({"request_type": "context_only", "disagg_request_id": 7,
            "ctx_info_endpoint": null, "encoded_opaque_state": null});
        assert_eq!(sign("k", &ctx_leg), None);
        assert_eq!(sign("k", &Value::Null), None);
        assert_eq!(check("k", Signed::of(&ctx_leg), None), Ok(()));
    }

    #[test]
    fn a_worker_refuses_a_missing_or_wrong_signature() {
        let params = json!({"encoded_opaque_state": "s"});
        let fields = Signed::of(&params);
        let good = signature("k", fields);
        assert_eq!(check("k", fields, Some(good.as_bytes())), Ok(()));
        assert_eq!(check("k", fields, None), Err(AuthError::Missing));
        assert_eq!(
            check("k", fields, Some(good.to_uppercase().as_bytes())),
            Err(AuthError::Mismatch),
            "compared exactly, as upstream's compare_digest"
        );
        assert_eq!(
            check("other", fields, Some(good.as_bytes())),
            Err(AuthError::Mismatch)
        );
        assert!(
            AuthError::Missing
                .to_string()
                .contains(INTERNAL_AUTH_HEADER)
        );
    }

    #[test]
    fn typed_params_sign_like_their_json() {
        let wire = json!({"request_type": "generation_only", "ctx_request_id": 3,
            "encoded_opaque_state": "b3BhcXVl", "ctx_info_endpoint": "tcp://h:1"});
        let typed: DisaggregatedParams = serde_json::from_value(wire.clone()).unwrap();
        let (endpoint, state) = typed.signed_fields();
        let from_typed = Signed::new(&endpoint, &state);
        assert_eq!(
            signature("k", from_typed),
            signature("k", Signed::of(&wire))
        );
    }
}
