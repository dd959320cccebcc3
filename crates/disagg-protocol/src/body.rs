//! Request bodies as TensorRT-LLM's coordinator sends them: JSON, or — with
//! `TRTLLM_SERVE_ENABLE_MSGSPEC=1` on the newest coordinator (`openai_client.py`) — MessagePack
//! of the same document, marked by the header `X-TRTLLM-Msgpack: 1` while `Content-Type` stays
//! `application/json`.

use serde::de::DeserializeOwned;

/// The header that marks a MessagePack body (HTTP header names are case-insensitive).
pub const MSGPACK_HEADER: &str = "x-trtllm-msgpack";

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Not JSON, or not the expected document.
    #[error("invalid request body: {0}")]
    Json(#[from] serde_json::Error),
    /// Not MessagePack, or not the expected document.
    #[error("invalid MessagePack request body ({MSGPACK_HEADER}: 1): {0}")]
    Msgpack(#[from] rmp_serde::decode::Error),
}

/// Whether the value of the [`MSGPACK_HEADER`] says MessagePack (upstream checks for `"1"`).
pub fn is_msgpack(header: Option<&[u8]>) -> bool {
    header.is_some_and(|v| v.trim_ascii() == b"1")
}

/// Read `body` as `T`: MessagePack when `msgpack`, else JSON.
pub fn decode<T: DeserializeOwned>(body: &[u8], msgpack: bool) -> Result<T, BodyError> {
    if msgpack {
        Ok(rmp_serde::from_slice(body)?)
    } else {
        Ok(serde_json::from_slice(body)?)
    }
}

/// `value` as MessagePack, as upstream's coordinator encodes a request (maps with string keys).
pub fn encode_msgpack(value: &serde_json::Value) -> Vec<u8> {
    // A `serde_json::Value` always encodes; named maps keep their keys.
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CompletionRequest, ScheduleStyle};
    use serde_json::json;

    #[test]
    fn msgpack_and_json_bodies_read_the_same() {
        let doc = json!({"model": "m", "prompt": [1, 2, 3], "max_tokens": 4,
            "disaggregated_params": {"request_type": "context_only", "disagg_request_id": 7,
                "schedule_style": 0, "conversation_id": "c-1"}});
        let from_json: CompletionRequest = decode(doc.to_string().as_bytes(), false).unwrap();
        let from_msgpack: CompletionRequest = decode(&encode_msgpack(&doc), true).unwrap();
        assert_eq!(from_json, from_msgpack);
        let p = from_msgpack.sampling.disaggregated_params.unwrap();
        assert_eq!(p.schedule_style, Some(ScheduleStyle::ContextFirst));
        assert_eq!(p.extra["conversation_id"], "c-1", "unknown fields are kept");
        let err = decode::<CompletionRequest>(b"\xc1", true).unwrap_err();
        assert!(err.to_string().contains("MessagePack"), "{err}");
        assert!(is_msgpack(Some(b"1")) && !is_msgpack(Some(b"0")) && !is_msgpack(None));
    }

    #[test]
    fn schedule_styles_read_integers_and_names_and_write_integers() {
        for (text, style) in [
            ("0", ScheduleStyle::ContextFirst),
            ("1", ScheduleStyle::GenerationFirst),
            ("\"context_first\"", ScheduleStyle::ContextFirst),
            ("\"GENERATION_FIRST\"", ScheduleStyle::GenerationFirst),
        ] {
            let s: ScheduleStyle = serde_json::from_str(text).unwrap();
            assert_eq!(s, style, "{text}");
        }
        assert_eq!(
            serde_json::to_string(&ScheduleStyle::GenerationFirst).unwrap(),
            "1"
        );
        let err = serde_json::from_str::<ScheduleStyle>("2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("use 0 (context_first) or 1"), "{err}");
    }
}
