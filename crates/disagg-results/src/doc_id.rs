//! A document's `_id` as upstream makes it (`OpenSearchDB.add_id_of_json` in
//! `jenkins/scripts/open_search_db.py`): the MD5 of `json.dumps(data, sort_keys=True,
//! indent=2)`. Python's encoder is reproduced byte for byte here — two-space indentation, `,`
//! at line ends and `: ` after keys, ASCII-only strings with `\uXXXX` escapes, and floats as
//! Python's `repr` writes them (`100.0`, `1e-05`, `1e+16`) — because serde_json writes some of
//! them differently.

use std::fmt::Write as _;

use md5::Digest as _;
use serde_json::{Map, Value};

/// `_id`: the MD5 (hex) of the document as Python's `json.dumps(doc, sort_keys=True, indent=2)`
/// writes it.
pub fn doc_id(doc: &Map<String, Value>) -> String {
    let text = python_json(&Value::Object(doc.clone()));
    md5::Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `json.dumps(value, sort_keys=True, indent=2)`.
pub fn python_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value, 0);
    out
}

fn write_value(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) if !n.is_f64() => {
                let _ = write!(out, "{i}");
            }
            (_, Some(u), _) if !n.is_f64() => {
                let _ = write!(out, "{u}");
            }
            (_, _, Some(f)) => out.push_str(&python_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_value(out, item, depth + 1);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return;
            }
            // Python sorts str keys by code point; UTF-8 byte order is the same order.
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_string(out, k);
                out.push_str(": ");
                write_value(out, &map[*k], depth + 1);
            }
            newline(out, depth);
            out.push('}');
        }
    }
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// A string as Python's ASCII-only encoder writes it: `\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`,
/// everything else outside `' '..='~'` as `\uXXXX` (UTF-16 surrogate pairs above U+FFFF).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// A float as Python's `repr` writes it: the shortest digits that round-trip, positional when
/// the decimal exponent is in `-4..16`, else `d.ddde±XX`; `NaN`, `Infinity`, `-Infinity` as
/// `json.dumps` writes those.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // Rust's `{:e}` gives the same shortest round-trip digits: `d[.ddd]e<exp>`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            format!("{sign}0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!(
                "{sign}{digits}{}.0",
                "0".repeat(point as usize - digits.len())
            )
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{sign}{int}.{frac}")
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let mant = if rest.is_empty() {
            first.to_string()
        } else {
            format!("{first}.{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_python_repr_writes_them() {
        for (f, py) in [
            (100.0, "100.0"),
            (0.8, "0.8"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (9_999_999_999_999_998.0, "9999999999999998.0"),
            (1.5e300, "1.5e+300"),
            (-2.5e-7, "-2.5e-07"),
            (123_456.789, "123456.789"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(python_float(f), py, "{f}");
        }
    }

    #[test]
    fn documents_are_written_as_python_writes_them() {
        let doc = serde_json::json!({
            "s_b": "é\"\n\u{1F600}",
            "a_list": [1, 2.0, []],
            "d_x": 1e-5,
            "l_n": 7,
            "b": false,
            "empty": {}
        });
        // python3 -c 'import json; print(json.dumps({"s_b": "é\"\n😀", "a_list": [1, 2.0, []],
        //   "d_x": 1e-5, "l_n": 7, "b": False, "empty": {}}, sort_keys=True, indent=2))'
        let py = "{\n  \"a_list\": [\n    1,\n    2.0,\n    []\n  ],\n  \"b\": false,\n  \"d_x\": 1e-05,\n  \"empty\": {},\n  \"l_n\": 7,\n  \"s_b\": \"\\u00e9\\\"\\n\\ud83d\\ude00\"\n}";
        assert_eq!(python_json(&doc), py);
    }

    #[test]
    fn ids_are_upstreams_md5() {
        let doc = serde_json::json!({"_id": "", "s_test_case_name": "e2e-x-con1_iter1_isl8_osl8",
            "d_token_throughput": 100.0, "l_concurrency": 1, "b_is_valid": true});
        // python3 -c 'import hashlib, json; d = {"_id": "", "s_test_case_name":
        //   "e2e-x-con1_iter1_isl8_osl8", "d_token_throughput": 100.0, "l_concurrency": 1,
        //   "b_is_valid": True}; print(hashlib.md5(json.dumps(d, sort_keys=True,
        //   indent=2).encode("utf-8")).hexdigest())'
        let serde_json::Value::Object(map) = doc else {
            unreachable!()
        };
        assert_eq!(doc_id(&map), "017e07b8cefbb17b160e7c7999900932");
    }
}
