//! A YAML document tree that remembers where every node came from.
//!
//! serde-based loaders stop at the first error and forget positions once a value is
//! deserialised. Validation here wants every problem at once, each with its line and column,
//! so configs are loaded into this small tree (anchors and aliases resolved, mapping order
//! kept) and read by hand by the config readers.
//!
//! Derived configs (the points of a sweep) are made by [`Node::set`] on a loaded tree and
//! written back by [`emit`]: the tree is handed to yaml-rust2's emitter (already the parser
//! here), which quotes every string that would otherwise read as another type. Anchors come
//! out expanded and comments are not kept; what a reader of the text sees is the same tree.

use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::{Yaml, YamlEmitter};

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, counted from 1.
    pub line: usize,
    /// Column, counted from 1.
    pub col: usize,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub value: Value,
}

/// The content of a node. Scalars keep their source text; types are resolved on access.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar; `quoted` is true for single/double-quoted and block scalars, which are
    /// always strings.
    Scalar {
        /// The scalar's text after YAML unescaping.
        text: String,
        /// Whether the scalar was written in a style that forces a string.
        quoted: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Where the key starts.
    pub pos: Pos,
    /// The key's text (non-scalar keys are rendered as their YAML kind).
    pub text: String,
}

/// A scalar resolved with the YAML 1.1 core rules that PyYAML (the upstream loader) applies.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// `null`, `~` or empty.
    Null,
    /// `true`/`false` and the YAML 1.1 spellings (`yes`, `on`, ...).
    Bool(bool),
    /// A decimal, hex or octal integer.
    Int(i64),
    /// A float with a dot or exponent.
    Float(f64),
    /// Anything else.
    Str(&'a str),
}

impl Node {
    /// A scalar node with no position (for values made in code, not read from a file).
    pub fn scalar_text(text: &str, quoted: bool) -> Node {
        Node {
            pos: Pos::default(),
            value: Value::Scalar {
                text: text.to_string(),
                quoted,
            },
        }
    }

    /// The node at a dotted path below this one (`["worker_config", "gen", "max_batch_size"]`).
    pub fn lookup(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    /// Put `value` at `path` below this mapping, replacing what is there (every entry of a
    /// duplicated key) or appending the key, and creating the mappings on the way. Fails with
    /// the path of the first node on the way that is not a mapping.
    pub fn set(&mut self, path: &[&str], value: Node) -> Result<(), String> {
        let Some((last, parents)) = path.split_last() else {
            return Err(String::new());
        };
        let mut node = self;
        for (depth, key) in parents.iter().enumerate() {
            if node.scalar() == Some(Scalar::Null) {
                node.value = Value::Map(Vec::new());
            }
            let Value::Map(entries) = &mut node.value else {
                return Err(path[..depth].join("."));
            };
            let at = match entries.iter().rposition(|(k, _)| k.text == *key) {
                Some(i) => i,
                None => {
                    entries.push((
                        Key {
                            pos: Pos::default(),
                            text: (*key).to_string(),
                        },
                        Node {
                            pos: Pos::default(),
                            value: Value::Map(Vec::new()),
                        },
                    ));
                    entries.len() - 1
                }
            };
            node = &mut entries[at].1;
        }
        if node.scalar() == Some(Scalar::Null) {
            node.value = Value::Map(Vec::new());
        }
        let Value::Map(entries) = &mut node.value else {
            return Err(parents.join("."));
        };
        let mut replaced = false;
        for (k, v) in entries.iter_mut() {
            if k.text == *last {
                *v = value.clone();
                replaced = true;
            }
        }
        if !replaced {
            entries.push((
                Key {
                    pos: Pos::default(),
                    text: (*last).to_string(),
                },
                value,
            ));
        }
        Ok(())
    }

    /// The tree as yaml-rust2 values: scalars resolved by the same YAML 1.1 rules as
    /// [`Node::scalar`], so the emitter quotes a string such as `"yes"` or `"1"`.
    fn to_yaml(&self) -> Yaml {
        match &self.value {
            Value::Seq(items) => Yaml::Array(items.iter().map(Node::to_yaml).collect()),
            Value::Map(entries) => {
                let mut hash = yaml_rust2::yaml::Hash::new();
                for (k, v) in entries {
                    // A duplicated key keeps its first place and its last value, as PyYAML reads it.
                    hash.insert(Yaml::String(k.text.clone()), v.to_yaml());
                }
                Yaml::Hash(hash)
            }
            Value::Scalar { text, .. } => match self.scalar() {
                Some(Scalar::Null) | None => Yaml::Null,
                Some(Scalar::Bool(b)) => Yaml::Boolean(b),
                Some(Scalar::Int(i)) => Yaml::Integer(i),
                // The text as written (`1.50`, `.inf`): it resolves to the same float.
                Some(Scalar::Float(_)) => Yaml::Real(text.clone()),
                Some(Scalar::Str(s)) => Yaml::String(s.to_string()),
            },
        }
    }

    /// The resolved scalar, or `None` for sequences and mappings.
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match &self.value {
            Value::Scalar { text, quoted: true } => Some(Scalar::Str(text)),
            Value::Scalar {
                text,
                quoted: false,
            } => Some(resolve_plain(text)),
            _ => None,
        }
    }

    /// The mapping entries, if this is a mapping.
    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The entry for `key`; with duplicate keys the last wins, as in PyYAML.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .rev()
            .find(|(k, _)| k.text == key)
            .map(|(_, v)| v)
    }

    /// The value as JSON (scalars resolved by the YAML 1.1 rules; a JSON document is also a
    /// YAML document, so this is how engine option files are written).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.text.clone(), v.to_json()))
                    .collect(),
            ),
            Value::Scalar { .. } => match self.scalar() {
                Some(Scalar::Bool(b)) => J::Bool(b),
                Some(Scalar::Int(i)) => J::from(i),
                Some(Scalar::Float(f)) => {
                    serde_json::Number::from_f64(f).map_or(J::Null, J::Number)
                }
                Some(Scalar::Str(s)) => J::from(s),
                Some(Scalar::Null) | None => J::Null,
            },
        }
    }

    /// A short description of the node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.scalar() {
            None => match self.value {
                Value::Seq(_) => "a list",
                _ => "a mapping",
            },
            Some(Scalar::Null) => "null",
            Some(Scalar::Bool(_)) => "a boolean",
            Some(Scalar::Int(_)) => "an integer",
            Some(Scalar::Float(_)) => "a number",
            Some(Scalar::Str(_)) => "a string",
        }
    }

    /// The node as it would read in a message: scalars verbatim, collections in flow style.
    pub fn display(&self) -> String {
        let mut out = String::new();
        self.write_flow(&mut out);
        if out.chars().count() > 80 {
            let cut: String = out.chars().take(77).collect();
            format!("{cut}...")
        } else {
            out
        }
    }

    fn write_flow(&self, out: &mut String) {
        match &self.value {
            Value::Scalar { text, quoted } => {
                if *quoted {
                    out.push_str(&format!("{text:?}"));
                } else {
                    out.push_str(text);
                }
            }
            Value::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_flow(out);
                }
                out.push(']');
            }
            Value::Map(entries) => {
                out.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&k.text);
                    out.push_str(": ");
                    v.write_flow(out);
                }
                out.push('}');
            }
        }
    }
}

/// Resolve the text of a plain (unquoted) scalar.
pub fn resolve_plain(text: &str) -> Scalar<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Scalar::Bool(true);
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Scalar::Bool(false);
        }
        _ => {}
    }
    let unsigned = text.trim_start_matches(['+', '-']);
    let negative = text.starts_with('-');
    if text.len() - unsigned.len() <= 1 && !unsigned.is_empty() {
        let digits = unsigned.replace('_', "");
        let parsed = if let Some(hex) = digits.strip_prefix("0x") {
            i64::from_str_radix(hex, 16).ok()
        } else if let Some(oct) = digits.strip_prefix("0o") {
            i64::from_str_radix(oct, 8).ok()
        } else if digits.bytes().all(|b| b.is_ascii_digit()) {
            digits.parse::<i64>().ok()
        } else {
            None
        };
        if let Some(v) = parsed {
            return Scalar::Int(if negative { -v } else { v });
        }
        // PyYAML floats need a dot (`1e3` is a string there); accept `.5`, `1.`, `1.5e3`.
        let looks_float = digits.contains('.')
            && digits
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
        if looks_float {
            if let Ok(v) = digits.parse::<f64>() {
                return Scalar::Float(if negative { -v } else { v });
            }
        }
        match unsigned {
            ".inf" | ".Inf" | ".INF" => {
                return Scalar::Float(if negative {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                });
            }
            ".nan" | ".NaN" | ".NAN" if !negative => return Scalar::Float(f64::NAN),
            _ => {}
        }
    }
    Scalar::Str(text)
}

/// `node` as YAML text (block style, no document marker) that [`load`] reads back as the same
/// tree, positions aside.
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    // Writing to a String cannot fail; an emitter error would be a bug in the tree.
    let _ = emitter.dump(&node.to_yaml());
    let body = out.strip_prefix("---").unwrap_or(&out);
    let body = body.strip_prefix('\n').unwrap_or(body.trim_start());
    format!("{body}\n")
}

/// A YAML syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser gave up.
    pub pos: Pos,
    /// The parser's explanation.
    pub message: String,
}

/// Load the first document of `text`. An empty document loads as an empty mapping.
pub fn load(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: Pos::from(*e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        value: Value::Map(Vec::new()),
    }))
}

enum Frame {
    Seq(Node, usize),
    Map {
        node: Node,
        anchor: usize,
        pending_key: Option<Key>,
    },
}

/// The most nodes a document may expand to once its aliases are copied. Test configs have a
/// few hundred; a "billion laughs" document (aliases of aliases of lists) has billions and
/// would take every byte of memory before it failed.
const MAX_NODES: usize = 1_000_000;

/// Nodes in a tree, itself included.
fn size(node: &Node) -> usize {
    1 + match &node.value {
        Value::Scalar { .. } => 0,
        Value::Seq(items) => items.iter().map(size).sum(),
        Value::Map(entries) => entries.iter().map(|(_, v)| 1 + size(v)).sum(),
    }
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Anchor id, the anchored node, its size.
    anchors: Vec<(usize, Node, usize)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    /// Nodes made so far, aliases counted as the copies they are.
    nodes: usize,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            let n = size(&node);
            self.anchors.push((anchor, node.clone(), n));
        }
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Frame::Map {
                node: map,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    let text = match &node.value {
                        Value::Scalar { text, .. } => text.clone(),
                        Value::Seq(_) => "<list>".to_string(),
                        Value::Map(_) => "<mapping>".to_string(),
                    };
                    *pending_key = Some(Key {
                        pos: node.pos,
                        text,
                    });
                }
                Some(key) => {
                    if let Value::Map(entries) = &mut map.value {
                        entries.push((key, node));
                    }
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        self.nodes += 1;
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.push_value(
                    Node {
                        pos,
                        value: Value::Scalar { text, quoted },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(
                Node {
                    pos,
                    value: Value::Seq(Vec::new()),
                },
                anchor,
            )),
            Event::MappingStart(anchor, _) => self.stack.push(Frame::Map {
                node: Node {
                    pos,
                    value: Value::Map(Vec::new()),
                },
                anchor,
                pending_key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(node, anchor)) | Some(Frame::Map { node, anchor, .. }) => {
                    self.push_value(node, anchor);
                }
                None => {}
            },
            Event::Alias(id) => match self.anchors.iter().rev().find(|(a, _, _)| *a == id) {
                Some((_, _, n)) if self.nodes.saturating_add(*n) > MAX_NODES => {
                    self.error.get_or_insert(SyntaxError {
                        pos,
                        message: format!(
                            "the document expands to more than {MAX_NODES} values through its \
                             aliases; a test config has a few hundred"
                        ),
                    });
                }
                Some((_, node, n)) => {
                    self.nodes += *n;
                    let node = node.clone();
                    self.push_value(node, 0);
                }
                None => {
                    self.error.get_or_insert(SyntaxError {
                        pos,
                        message: "alias refers to an unknown anchor".to_string(),
                    });
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let doc = load("a:\n  b: 3\n").unwrap();
        let b = doc.get("a").unwrap().get("b").unwrap();
        assert_eq!(b.pos, Pos { line: 2, col: 6 });
        assert_eq!(b.scalar(), Some(Scalar::Int(3)));
    }

    #[test]
    fn aliases_copy_the_anchored_node() {
        let doc = load("x: &a {k: 1}\ny: *a\n").unwrap();
        assert_eq!(
            doc.get("y").unwrap().get("k").unwrap().scalar(),
            Some(Scalar::Int(1))
        );
    }

    /// A "billion laughs" document: nine levels of ten aliases each would be 10^9 scalars.
    #[test]
    fn aliases_of_aliases_are_bounded() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let t0 = std::time::Instant::now();
        let err = load(&doc).unwrap_err();
        assert!(err.message.contains("expands to more than"), "{err:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn scalars_resolve_like_pyyaml() {
        let doc = load("a: yes\nb: '1'\nc: 1.5\nd: 1e3\ne: null\nf: 0x10\ng:\n").unwrap();
        assert_eq!(doc.get("a").unwrap().scalar(), Some(Scalar::Bool(true)));
        assert_eq!(doc.get("b").unwrap().scalar(), Some(Scalar::Str("1")));
        assert_eq!(doc.get("c").unwrap().scalar(), Some(Scalar::Float(1.5)));
        assert_eq!(doc.get("d").unwrap().scalar(), Some(Scalar::Str("1e3")));
        assert_eq!(doc.get("e").unwrap().scalar(), Some(Scalar::Null));
        assert_eq!(doc.get("f").unwrap().scalar(), Some(Scalar::Int(16)));
        assert_eq!(doc.get("g").unwrap().scalar(), Some(Scalar::Null));
    }

    #[test]
    fn mapping_order_is_kept() {
        let doc = load("z: 1\na: 2\nm: 3\n").unwrap();
        let keys: Vec<_> = doc.as_map().unwrap().iter().map(|(k, _)| &k.text).collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }

    /// The tree without positions, for comparing a document with its emitted copy.
    fn shape(n: &Node) -> serde_json::Value {
        n.to_json()
    }

    #[test]
    fn emitted_text_reads_back_as_the_same_tree() {
        let text = "a: yes\nb: '1'\nc: 1.50\nd: 1e3\ne: ~\nf: 0x10\ng: 'on'\nh: \"x: y\"\n\
                    i: [1, '2', {j: k}]\nl: {}\nm: []\nn: \"line1\\nline2\\n\"\no: -3\n\
                    p: '-x'\nq: '#not a comment'\nr: <placeholder>\ns: .inf\nt: ''\nu: \"  pad \"\n\
                    anchors: &x {k: 1}\nalias: *x\n";
        let doc = load(text).unwrap();
        let out = emit(&doc);
        let back = load(&out).unwrap_or_else(|e| panic!("{e:?}\n{out}"));
        assert_eq!(shape(&back), shape(&doc), "{out}");
        // Strings that would read as another type stay strings.
        for key in ["b", "d", "g", "p", "r", "t"] {
            assert!(
                matches!(back.get(key).unwrap().scalar(), Some(Scalar::Str(_))),
                "{key}: {out}"
            );
        }
        assert!(!out.starts_with("---"), "{out}");
    }

    #[test]
    fn every_fixture_survives_emission() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/trtllm-configs");
        let mut seen = 0;
        let mut dirs = vec![std::path::PathBuf::from(root)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    dirs.push(p);
                } else if p.extension().is_some_and(|e| e == "yaml") {
                    let doc = load(&std::fs::read_to_string(&p).unwrap()).unwrap();
                    let out = emit(&doc);
                    let back = load(&out).unwrap_or_else(|e| panic!("{}: {e:?}", p.display()));
                    assert_eq!(shape(&back), shape(&doc), "{}", p.display());
                    seen += 1;
                }
            }
        }
        assert!(seen >= 40, "only {seen} fixtures");
    }

    #[test]
    fn set_replaces_appends_and_creates_mappings() {
        let mut doc = load("a:\n  b: 1\n  b: 2\nc: ~\nd: 3\n").unwrap();
        doc.set(&["a", "b"], Node::scalar_text("9", false)).unwrap();
        doc.set(&["c", "x", "y"], Node::scalar_text("z", false))
            .unwrap();
        doc.set(&["e"], Node::scalar_text("new", false)).unwrap();
        let back = load(&emit(&doc)).unwrap();
        assert_eq!(
            back.to_json(),
            serde_json::json!({"a": {"b": 9}, "c": {"x": {"y": "z"}}, "d": 3, "e": "new"})
        );
        assert_eq!(
            doc.set(&["d", "k"], Node::scalar_text("1", false)),
            Err("d".to_string())
        );
        assert_eq!(
            doc.lookup(&["c", "x", "y"]).unwrap().scalar(),
            Some(Scalar::Str("z"))
        );
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let err = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }
}
