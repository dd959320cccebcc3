//! Typed reads from a [`Node`] tree that record every problem in a [`Sink`] instead of stopping.

use std::path::Path;

use crate::ConfigError;
use crate::diag::Sink;
use crate::yaml::{self, Node, Pos, Scalar, Value, resolve_plain as resolve_plain_text};

/// Read a config file's text, naming the file in the error.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Load YAML text; a syntax error becomes a positioned diagnostic and ends the read.
pub(crate) fn load_yaml(sink: Sink, text: &str) -> Result<(Sink, Node), ConfigError> {
    let mut sink = sink;
    match yaml::load(text) {
        Ok(root) => Ok((sink, root)),
        Err(e) => {
            sink.error(
                Some(e.pos),
                "",
                None,
                format!("the file is not valid YAML: {}", e.message),
                "fix the YAML syntax at this position (indentation, quotes, brackets)",
            );
            Err(ConfigError::Invalid(sink.finish()))
        }
    }
}

/// A mapping node together with its YAML path.
#[derive(Clone, Copy)]
pub(crate) struct MapRef<'n> {
    pub node: &'n Node,
    pub path: &'n str,
}

/// Join a parent path and a key.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Whether a string is an unfilled template value such as `<partition>`.
pub fn is_placeholder(s: &str) -> bool {
    s.len() > 2 && s.starts_with('<') && s.ends_with('>') && !s[1..s.len() - 1].contains(['<', '>'])
}

impl<'n> MapRef<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.node.get(key)
    }

    pub fn pos(&self) -> Pos {
        self.node.pos
    }
}

/// Read `key` of `parent` as a mapping section. A missing or null section is `None`; anything
/// else that is not a mapping is an error.
pub(crate) fn section<'n>(
    sink: &mut Sink,
    parent: MapRef<'n>,
    key: &str,
    path: &'n str,
) -> Option<MapRef<'n>> {
    let node = parent.get(key)?;
    match &node.value {
        Value::Map(_) => Some(MapRef { node, path }),
        _ if node.scalar() == Some(Scalar::Null) => None,
        _ => {
            sink.error(
                Some(node.pos),
                path,
                Some(node.display()),
                format!("expected a mapping, found {}", node.kind()),
                format!("write `{key}:` followed by indented `key: value` lines"),
            );
            None
        }
    }
}

/// Report keys of `map` that are not in `known`: an error when `strict` (our own sections),
/// else a warning (upstream sections, which grow new keys over time).
pub(crate) fn check_keys(sink: &mut Sink, map: MapRef<'_>, known: &[&str], strict: bool) {
    let Some(entries) = map.node.as_map() else {
        return;
    };
    // A set, not a scan of the earlier keys: a hostile file of 100 000 keys took minutes.
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (key, _) in entries {
        let path = join(map.path, &key.text);
        if !seen.insert(key.text.as_str()) {
            sink.warning(
                Some(key.pos),
                &path,
                None,
                "duplicate key; the later value wins",
                "remove one of the two entries",
            );
        }
        if known.contains(&key.text.as_str()) {
            continue;
        }
        let hint = match closest(&key.text, known) {
            Some(best) => format!("did you mean `{best}`? known keys: {}", known.join(", ")),
            None => format!("known keys: {}", known.join(", ")),
        };
        if strict {
            sink.error(Some(key.pos), &path, None, "unknown key", hint);
        } else {
            sink.warning(
                Some(key.pos),
                &path,
                None,
                "unknown key (kept, but disagg does not read it)",
                hint,
            );
        }
    }
}

pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Whether a value must be present.
#[derive(Clone, Copy)]
pub(crate) enum Need<'h> {
    /// Absent is fine.
    Optional,
    /// Absent is an error with this hint.
    Required(&'h str),
}

fn missing(sink: &mut Sink, map: MapRef<'_>, key: &str, need: Need<'_>) {
    if let Need::Required(hint) = need {
        // Point at the mapping's first key: the line the key would join.
        let pos = map
            .node
            .as_map()
            .and_then(|entries| entries.first())
            .map_or(map.pos(), |(k, _)| k.pos);
        sink.error(
            Some(pos),
            &join(map.path, key),
            None,
            format!("required key `{key}` is missing"),
            hint,
        );
    }
}

fn wrong_type(sink: &mut Sink, node: &Node, path: &str, expected: &str, hint: &str) {
    let extra = match (&node.value, node.scalar()) {
        (_, Some(Scalar::Str(s))) if is_placeholder(s) => {
            format!("; `{s}` is an unfilled placeholder")
        }
        (Value::Scalar { text, quoted: true }, _)
            if !matches!(resolve_plain_text(text), Scalar::Str(_)) =>
        {
            "; remove the quotes".to_string()
        }
        _ => String::new(),
    };
    sink.error(
        Some(node.pos),
        path,
        Some(node.display()),
        format!("expected {expected}, found {}{extra}", node.kind()),
        hint,
    );
}

/// An integer within `min..=max`.
pub(crate) fn int(
    sink: &mut Sink,
    map: MapRef<'_>,
    key: &str,
    need: Need<'_>,
    min: i64,
    max: i64,
    hint: &str,
) -> Option<i64> {
    let path = join(map.path, key);
    let Some(node) = map.get(key) else {
        missing(sink, map, key, need);
        return None;
    };
    match node.scalar() {
        Some(Scalar::Int(v)) if (min..=max).contains(&v) => Some(v),
        Some(Scalar::Int(_)) => {
            let range = if max >= i64::from(u32::MAX) {
                format!("at least {min}")
            } else {
                format!("between {min} and {max}")
            };
            sink.error(
                Some(node.pos),
                &path,
                Some(node.display()),
                format!("must be {range}"),
                hint,
            );
            None
        }
        Some(Scalar::Null) if matches!(need, Need::Optional) => None,
        _ => {
            wrong_type(sink, node, &path, "an integer", hint);
            None
        }
    }
}

/// A number (integers are accepted).
pub(crate) fn float(
    sink: &mut Sink,
    map: MapRef<'_>,
    key: &str,
    need: Need<'_>,
    min: f64,
    hint: &str,
) -> Option<f64> {
    let path = join(map.path, key);
    let Some(node) = map.get(key) else {
        missing(sink, map, key, need);
        return None;
    };
    let value = match node.scalar() {
        Some(Scalar::Int(v)) => v as f64,
        Some(Scalar::Float(v)) => v,
        Some(Scalar::Null) if matches!(need, Need::Optional) => return None,
        _ => {
            wrong_type(sink, node, &path, "a number", hint);
            return None;
        }
    };
    if value.is_finite() && value >= min {
        Some(value)
    } else {
        sink.error(
            Some(node.pos),
            &path,
            Some(node.display()),
            format!("must be a finite number of at least {min}"),
            hint,
        );
        None
    }
}

/// A boolean.
pub(crate) fn bool(
    sink: &mut Sink,
    map: MapRef<'_>,
    key: &str,
    need: Need<'_>,
    hint: &str,
) -> Option<bool> {
    let path = join(map.path, key);
    let Some(node) = map.get(key) else {
        missing(sink, map, key, need);
        return None;
    };
    match node.scalar() {
        Some(Scalar::Bool(v)) => Some(v),
        Some(Scalar::Null) if matches!(need, Need::Optional) => None,
        _ => {
            wrong_type(sink, node, &path, "true or false", hint);
            None
        }
    }
}

/// A string; plain numbers are taken as their text (`job_time: 02:00:00`, `tasks: 1`).
pub(crate) fn string(
    sink: &mut Sink,
    map: MapRef<'_>,
    key: &str,
    need: Need<'_>,
    hint: &str,
) -> Option<String> {
    let path = join(map.path, key);
    let Some(node) = map.get(key) else {
        missing(sink, map, key, need);
        return None;
    };
    match (&node.value, node.scalar()) {
        (_, Some(Scalar::Null)) if matches!(need, Need::Optional) => None,
        (Value::Scalar { text, .. }, Some(Scalar::Str(_) | Scalar::Int(_) | Scalar::Float(_))) => {
            Some(text.clone())
        }
        _ => {
            wrong_type(sink, node, &path, "a string", hint);
            None
        }
    }
}

/// A string from a fixed set of choices (compared case-insensitively, returned as written in
/// `choices`).
pub(crate) fn choice(
    sink: &mut Sink,
    map: MapRef<'_>,
    key: &str,
    choices: &[&'static str],
    hint: &str,
) -> Option<&'static str> {
    let text = string(sink, map, key, Need::Optional, hint)?;
    if let Some(c) = choices.iter().find(|c| c.eq_ignore_ascii_case(&text)) {
        return Some(c);
    }
    let node = map.get(key)?;
    sink.error(
        Some(node.pos),
        &join(map.path, key),
        Some(node.display()),
        format!("must be one of: {}", choices.join(", ")),
        hint,
    );
    None
}
