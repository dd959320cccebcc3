//! `results.xml`: the run as a JUnit report, the format Jenkins' JUnit plugin reads.
//!
//! One `<testsuite>` named after the config; one `<testcase>` per planned run (`con8`) with its
//! metrics as `<property>` elements and in `<system-out>`; an invalid run is a `<failure>`, a
//! run that did not happen (the test failed before it) an `<error>` with the reason.

use std::fmt::Write as _;

use crate::summary::{RunSummary, Summary};

/// Escape text for an XML attribute or element (control characters other than tab and
/// newlines are not allowed in XML 1.0 and are dropped).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// `2026-11-28T17:21:47` (UTC) from milliseconds since the Unix epoch.
pub fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The metrics of a run as `(name, value)` pairs, in the order of [`RunSummary`]'s fields.
fn properties(r: &RunSummary) -> Vec<(String, String)> {
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(r) else {
        return Vec::new();
    };
    map.into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            _ => None,
        })
        .collect()
}

/// The JUnit XML of a run.
pub fn render(s: &Summary) -> String {
    render_many(std::slice::from_ref(s))
}

/// Counts of a suite: (tests, failures, errors).
fn counts(s: &Summary) -> (usize, usize, usize) {
    let failures = s.runs.iter().filter(|r| r.status == "invalid").count();
    let errors = s.runs.iter().filter(|r| r.status == "not_run").count();
    // A run that failed with nothing planned still shows up as one error.
    match (s.runs.is_empty(), &s.reason) {
        (true, Some(_)) => (1, 0, 1),
        _ => (s.runs.len(), failures, errors),
    }
}

/// The JUnit XML of several runs (a CI test list): one `<testsuite>` each.
pub fn render_many(all: &[Summary]) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let (mut tests, mut failures, mut errors, mut time) = (0, 0, 0, 0.0);
    for s in all {
        let (t, f, e) = counts(s);
        tests += t;
        failures += f;
        errors += e;
        time += s.duration_s;
    }
    let _ = writeln!(
        x,
        "<testsuites name=\"disagg\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">"
    );
    for s in all {
        suite(&mut x, s);
    }
    x.push_str("</testsuites>\n");
    x
}

fn suite(x: &mut String, s: &Summary) {
    let (tests, failures, errors) = counts(s);
    let suite = escape(&s.config);
    let class = escape(&format!("disagg.{}", s.config));
    let _ = writeln!(
        x,
        "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{:.3}\" timestamp=\"{}\">",
        s.duration_s,
        iso8601(s.started_unix_ms)
    );
    x.push_str("    <properties>\n");
    let mut suite_props = vec![
        ("run_dir", s.run_dir.clone()),
        ("outcome", format!("{:?}", s.outcome).to_lowercase()),
    ];
    if let Some(t) = s.first_request_s {
        suite_props.push(("first_request_s", format!("{t:.3}")));
    }
    for (k, v) in suite_props {
        let _ = writeln!(x, "      <property name=\"{k}\" value=\"{}\"/>", escape(&v));
    }
    x.push_str("    </properties>\n");
    if s.runs.is_empty() {
        if let Some(why) = &s.reason {
            let _ = writeln!(
                x,
                "    <testcase classname=\"{class}\" name=\"run\" time=\"{:.3}\">\n      <error message=\"{}\" type=\"run_failed\"/>\n    </testcase>",
                s.duration_s,
                escape(why)
            );
        }
    }
    for r in &s.runs {
        let props = properties(r);
        let time = if r.request_throughput > 0.0 {
            r.requests.saturating_sub(r.failed) as f64 / r.request_throughput
        } else {
            0.0
        };
        let _ = writeln!(
            x,
            "    <testcase classname=\"{class}\" name=\"{}\" time=\"{time:.3}\">",
            escape(&r.label)
        );
        x.push_str("      <properties>\n");
        for (k, v) in &props {
            let _ = writeln!(x, "        <property name=\"{k}\" value=\"{v}\"/>");
        }
        x.push_str("      </properties>\n");
        let why = escape(&r.reasons.join("; "));
        match r.status.as_str() {
            "invalid" => {
                let _ = writeln!(
                    x,
                    "      <failure message=\"INVALID: {why}\" type=\"invalid_run\">{why}</failure>"
                );
            }
            "not_run" => {
                let _ = writeln!(
                    x,
                    "      <error message=\"{why}\" type=\"not_run\">{why}</error>"
                );
            }
            _ => {}
        }
        let out: String = props.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        let _ = writeln!(x, "      <system-out>{}</system-out>", escape(&out));
        x.push_str("    </testcase>\n");
    }
    x.push_str("  </testsuite>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00");
        assert_eq!(iso8601(1_795_886_507_000), "2026-11-28T17:21:47");
    }

    #[test]
    fn markup_and_control_characters_are_escaped() {
        assert_eq!(
            escape("a<b & \"c\" 'd'>\u{1b}[0m\n"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;[0m\n"
        );
    }
}
