//! The roles of a run, named once: `CTX_<i>`, `GEN_<i>`, `DISAGG_SERVER`, `BENCHMARK` — the
//! names of the rendezvous files, the Slurm steps, `DISAGG_SERVING_TYPE` and the logs.

use std::fmt;
use std::str::FromStr;

use crate::ServerKind;

/// One role of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Context (prefill) server `i`.
    Ctx(u32),
    /// Generation (decode) server `i`.
    Gen(u32),
    /// The disaggregated router (coordinator).
    DisaggServer,
    /// The benchmark client.
    Benchmark,
}

/// The spellings, for messages.
pub const ROLE_SPELLINGS: &str = "CTX_<i>, GEN_<i>, DISAGG_SERVER or BENCHMARK";

impl Role {
    /// The worker role of server `index` of `kind`.
    pub fn worker(kind: ServerKind, index: u32) -> Role {
        match kind {
            ServerKind::Ctx => Role::Ctx(index),
            ServerKind::Gen => Role::Gen(index),
        }
    }

    /// The kind of server a worker role runs; `None` for the router and the benchmark.
    pub fn server_kind(self) -> Option<ServerKind> {
        match self {
            Role::Ctx(_) => Some(ServerKind::Ctx),
            Role::Gen(_) => Some(ServerKind::Gen),
            Role::DisaggServer | Role::Benchmark => None,
        }
    }

    /// A context or generation server.
    pub fn is_worker(self) -> bool {
        self.server_kind().is_some()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Ctx(i) => write!(f, "CTX_{i}"),
            Role::Gen(i) => write!(f, "GEN_{i}"),
            Role::DisaggServer => f.write_str("DISAGG_SERVER"),
            Role::Benchmark => f.write_str("BENCHMARK"),
        }
    }
}

/// A name that is not a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role `{0}`: use {ROLE_SPELLINGS}")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Role, UnknownRole> {
        let index = |prefix: &str| {
            let digits = s.strip_prefix(prefix)?;
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            digits.parse::<u32>().ok()
        };
        match s {
            "DISAGG_SERVER" => Ok(Role::DisaggServer),
            "BENCHMARK" => Ok(Role::Benchmark),
            _ => index("CTX_")
                .map(Role::Ctx)
                .or_else(|| index("GEN_").map(Role::Gen))
                .ok_or_else(|| UnknownRole(s.to_string())),
        }
    }
}

impl serde::Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in [
            Role::Ctx(0),
            Role::Gen(12),
            Role::DisaggServer,
            Role::Benchmark,
        ] {
            assert_eq!(r.to_string().parse::<Role>(), Ok(r));
        }
        assert_eq!(Role::Gen(3).to_string(), "GEN_3");
    }

    #[test]
    fn other_names_are_refused_with_the_spellings() {
        for bad in ["CTX_", "GEN_x", "ctx_0", "CTX_-1", "SERVER", "", "GEN_1 "] {
            let err = bad.parse::<Role>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("role `{bad}`: use CTX_<i>, GEN_<i>, DISAGG_SERVER or BENCHMARK")
            );
        }
    }

    #[test]
    fn roles_serialize_as_their_names() {
        let json = serde_json::to_string(&[Role::Ctx(1), Role::Benchmark]).unwrap();
        assert_eq!(json, r#"["CTX_1","BENCHMARK"]"#);
        let back: Vec<Role> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [Role::Ctx(1), Role::Benchmark]);
        assert!(serde_json::from_str::<Role>(r#""WORKER""#).is_err());
    }
}
