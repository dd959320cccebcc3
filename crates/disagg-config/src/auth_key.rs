//! `internal_request_auth_key`: the secret a TensorRT-LLM coordinator signs its generation
//! requests with and its workers check (upstream `tensorrt_llm/serve/disagg_auth.py`).
//!
//! The key is read from a test config's top level and from a coordinator config
//! (`server_config.yaml`); it is never echoed: validation messages name the key but not its
//! value, and [`AuthKey`]'s `Debug` prints `AuthKey(***)`.

use std::fmt;

use crate::diag::Sink;
use crate::reader::MapRef;
use crate::yaml::{Scalar, Value};

/// The config key, in both configs.
pub const AUTH_KEY_FIELD: &str = "internal_request_auth_key";

/// A non-empty internal-auth key. Its value is only reachable through
/// [`AuthKey::expose_secret`], so it cannot reach a log line through `{:?}` by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(String);

impl AuthKey {
    /// A key, unless `value` is empty (upstream refuses an empty key:
    /// "internal_request_auth_key must be a non-empty string").
    pub fn new(value: impl Into<String>) -> Option<AuthKey> {
        let value = value.into();
        (!value.is_empty()).then_some(AuthKey(value))
    }

    /// The key itself, for signing and for the files upstream reads it from.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(***)")
    }
}

/// Read `internal_request_auth_key` of `map`: a non-empty string, or null/absent. A problem is
/// reported without the value (it is a secret).
pub(crate) fn read(sink: &mut Sink, map: MapRef<'_>) -> Option<AuthKey> {
    let node = map.get(AUTH_KEY_FIELD)?;
    let path = crate::reader::join(map.path, AUTH_KEY_FIELD);
    let found = match (&node.value, node.scalar()) {
        (_, Some(Scalar::Null)) => return None,
        (Value::Scalar { text, .. }, Some(Scalar::Str(_))) => match AuthKey::new(text.clone()) {
            Some(key) => return Some(key),
            None => "an empty string",
        },
        _ => node.kind(),
    };
    sink.error(
        Some(node.pos),
        &path,
        None,
        format!("must be a non-empty string (as upstream requires), found {found}; the value is not shown"),
        "quote the key, e.g. internal_request_auth_key: \"<64 hex digits>\", or remove it and \
         disagg generates one per run",
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let key = AuthKey::new("s3cret").unwrap();
        assert_eq!(format!("{key:?}"), "AuthKey(***)");
        assert_eq!(format!("{:?}", Some(key.clone())), "Some(AuthKey(***))");
        assert_eq!(key.expose_secret(), "s3cret");
        assert_eq!(AuthKey::new(""), None);
    }

    const CONFIG: &str = "
hardware: {gpus_per_node: 4, num_ctx_servers: 1, num_gen_servers: 1}
benchmark: {concurrency_list: '1', input_length: 128, output_length: 64}
worker_config: {ctx: {tensor_parallel_size: 1}, gen: {tensor_parallel_size: 1}}
";

    #[test]
    fn a_test_config_may_bring_its_own_key() {
        let path = std::path::Path::new("t.yaml");
        let own = crate::TestConfig::parse(
            path,
            &format!("{CONFIG}internal_request_auth_key: \"abc123\"\n"),
        )
        .unwrap();
        assert_eq!(own.auth_key().map(AuthKey::expose_secret), Some("abc123"));
        assert!(
            own.warnings().0.iter().all(|d| d.path != AUTH_KEY_FIELD),
            "{}",
            own.warnings()
        );
        assert!(!format!("{own:?}").contains("abc123"));
        assert_eq!(
            crate::TestConfig::parse(path, CONFIG).unwrap().auth_key(),
            None
        );
        // Written unquoted as digits it is a YAML integer: refused, the digits not repeated.
        let err = crate::TestConfig::parse(
            path,
            &format!("{CONFIG}internal_request_auth_key: 987654321\n"),
        )
        .unwrap_err();
        let text = err.diagnostics().unwrap().to_string();
        assert!(
            text.contains("found an integer; the value is not shown"),
            "{text}"
        );
        assert!(!text.contains("987654321"), "{text}");
    }
}
