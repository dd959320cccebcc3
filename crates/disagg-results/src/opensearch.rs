//! Export to OpenSearch in the upstream document format, and read history back.
//!
//! Documents are flat, with type-prefixed field names (`s_` string, `l_` integer, `d_` float,
//! `b_` bool, `ts_` epoch ms): the run's identity and match keys, the job fields, the 16
//! metrics as `d_<name>`, `b_is_valid`, `b_is_post_merge`, `b_is_baseline`, `ts_created`; `_id`
//! is the MD5 of the document's sorted JSON, as upstream. They are posted with the standard
//! `_bulk` API (or, with `posting`, upstream's `POST {base}/dataflow2/{project}/posting`).
//! Credentials come from the environment only and are never written anywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use md5::Digest as _;
use serde_json::{Map, Value};

use crate::store::StoredRun;

/// Where documents go; built from the environment by [`Target::from_env`].
#[derive(Clone)]
pub struct Target {
    /// Base URL (`http://host:9200`).
    pub url: String,
    /// Index prefix; documents go to `<prefix>-YYYY.MM` (upstream: `df-<project>`).
    pub index: String,
    /// Use upstream's posting endpoint instead of `_bulk`.
    pub posting: bool,
    /// The most time one upload or one search may take, retries included
    /// (`DISAGG_OPENSEARCH_TIMEOUT` seconds, default 30): a results server that hangs must not
    /// hold a finished test for minutes.
    pub budget: Duration,
    user: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for Target {
    // Never print the credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("index", &self.index)
            .field("posting", &self.posting)
            .field("user", &self.user.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Target {
    /// `DISAGG_OPENSEARCH_URL` (required), `DISAGG_OPENSEARCH_INDEX` (default
    /// `df-disagg-perf`), `DISAGG_OPENSEARCH_POSTING=1`, `DISAGG_OPENSEARCH_USER` and
    /// `DISAGG_OPENSEARCH_PASSWORD`, `DISAGG_OPENSEARCH_TIMEOUT`. `None` when no URL is
    /// configured.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Target> {
        let url = env("DISAGG_OPENSEARCH_URL").filter(|u| !u.is_empty())?;
        Some(Target {
            url: url.trim_end_matches('/').to_string(),
            index: env("DISAGG_OPENSEARCH_INDEX").unwrap_or_else(|| "df-disagg-perf".to_string()),
            posting: env("DISAGG_OPENSEARCH_POSTING").is_some_and(|v| v == "1" || v == "true"),
            budget: env("DISAGG_OPENSEARCH_TIMEOUT")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .map_or(Duration::from_secs(30), Duration::from_secs_f64),
            user: env("DISAGG_OPENSEARCH_USER"),
            password: env("DISAGG_OPENSEARCH_PASSWORD"),
        })
    }

    /// The name under which uploads are logged in the store (no credentials in it).
    pub fn key(&self) -> String {
        format!("opensearch:{}/{}", self.url, self.index)
    }

    fn agent(&self, timeout: Duration) -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn auth(&self) -> Option<String> {
        let user = self.user.as_ref()?;
        let pass = self.password.clone().unwrap_or_default();
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        ))
    }

    /// Post documents; retried with backoff (0.5 s, 1 s, 2 s) on connection errors, 429 and
    /// 5xx, all within [`Target::budget`]. Success is a 2xx whose body says every document was
    /// taken (`_bulk`: valid JSON, `errors: false`, one item per document): a garbled answer
    /// leaves them unsent, and since a document's `_id` never changes, sending it again later
    /// replaces it rather than adding a second copy.
    pub fn post(&self, docs: &[Map<String, Value>]) -> Result<(), String> {
        if docs.is_empty() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + self.budget;
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        let (url, body, content_type) = if self.posting {
            let project = self.index.strip_prefix("df-").unwrap_or(&self.index);
            (
                format!("{}/dataflow2/{project}/posting", self.url),
                serde_json::to_string(docs).map_err(|e| e.to_string())?,
                "application/json",
            )
        } else {
            (
                format!("{}/_bulk?refresh=true", self.url),
                bulk_body(&self.index, docs),
                "application/x-ndjson",
            )
        };
        if !self.posting {
            // The prefixes' types, as upstream's indices have them (strings as keywords, so
            // `term` filters match whole values); best effort — an existing template stays.
            let _ = self.put_template(&self.agent(left().min(Duration::from_secs(10))));
        }
        let mut last = String::new();
        for attempt in 0..4 {
            if attempt > 0 {
                let pause = Duration::from_millis(500 << (attempt - 1));
                if left() <= pause {
                    break;
                }
                std::thread::sleep(pause);
            }
            if left().is_zero() {
                break;
            }
            let mut req = self
                .agent(left())
                .post(&url)
                .header("Content-Type", content_type);
            if let Some(a) = self.auth() {
                req = req.header("Authorization", a);
            }
            match req.send(body.as_str()) {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string();
                    let text = match text {
                        Ok(t) => t,
                        Err(e) => {
                            last = format!("{url}: HTTP {status}, the body could not be read: {e}");
                            continue;
                        }
                    };
                    if (200..300).contains(&status) {
                        return if self.posting {
                            Ok(())
                        } else {
                            bulk_accepted(&text, docs.len()).map_err(|why| format!("{url}: {why}"))
                        };
                    }
                    last = format!("{url}: HTTP {status}: {}", cut(&text));
                    if status < 500 && status != 429 {
                        return Err(last);
                    }
                }
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        if last.is_empty() {
            last = format!("{url}: no answer within {:.0} s", self.budget.as_secs_f64());
        }
        Err(last)
    }

    fn put_template(&self, agent: &ureq::Agent) -> Result<(), String> {
        let template = serde_json::json!({
            "index_patterns": [format!("{}-*", self.index)],
            "template": {"mappings": {"dynamic_templates": [
                {"s": {"match": "s_*", "mapping": {"type": "keyword"}}},
                {"d": {"match": "d_*", "mapping": {"type": "double"}}},
                {"l": {"match": "l_*", "mapping": {"type": "long"}}},
                {"b": {"match": "b_*", "mapping": {"type": "boolean"}}},
                {"ts": {"match": "ts_*", "mapping": {"type": "date", "format": "epoch_millis"}}}
            ]}}
        });
        let url = format!("{}/_index_template/{}", self.url, self.index);
        let mut req = agent.put(&url).header("Content-Type", "application/json");
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        let resp = req.send(template.to_string()).map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("{url}: HTTP {}", resp.status()))
        }
    }

    /// Documents matching every `term` in `must`, created at or after `since_ms`
    /// (upstream's history query), at most 5000.
    pub fn search(
        &self,
        must: &BTreeMap<String, Value>,
        since_ms: u64,
    ) -> Result<Vec<Map<String, Value>>, String> {
        let mut clauses: Vec<Value> = must
            .iter()
            .map(|(k, v)| serde_json::json!({"term": {k: v}}))
            .collect();
        clauses.push(serde_json::json!({"range": {"ts_created": {"gte": since_ms}}}));
        let query = serde_json::json!({"size": 5000, "query": {"bool": {"must": clauses}}});
        let url = format!("{}/{}-*/_search", self.url, self.index);
        let mut req = self
            .agent(self.budget.min(Duration::from_secs(10)))
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(a) = self.auth() {
            req = req.header("Authorization", a);
        }
        let mut resp = req
            .send(query.to_string())
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{url}: HTTP {status}: {}", cut(&text)));
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| format!("{url}: {e}"))?;
        Ok(v["hits"]["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .filter_map(|h| h["_source"].as_object().cloned())
                    .collect()
            })
            .unwrap_or_default())
    }
}

fn cut(s: &str) -> String {
    s.chars().take(300).collect()
}

/// A stored run as an upstream-format document.
pub fn document(run: &StoredRun) -> Map<String, Value> {
    let mut d = Map::new();
    for (k, v) in run.identity.iter().chain(&run.job) {
        d.insert(k.clone(), v.clone());
    }
    for (name, v) in &run.metrics {
        d.insert(format!("d_{name}"), Value::from(*v));
    }
    let concurrency = run
        .identity
        .get("l_concurrency")
        .cloned()
        .unwrap_or_default();
    d.insert(
        "s_test_case_name".into(),
        format!("{}-{}", run.config_name, run.label).into(),
    );
    d.insert("s_client_name".into(), format!("con{concurrency}").into());
    d.insert("s_config_name".into(), run.config_name.clone().into());
    d.insert("s_config_hash".into(), run.config_hash.clone().into());
    d.insert("s_run_dir".into(), run.run_dir.clone().into());
    d.insert("s_label".into(), run.label.clone().into());
    d.insert("s_case_key".into(), run.case_key.clone().into());
    d.insert("s_tool".into(), run.tool.clone().into());
    d.insert("b_is_valid".into(), run.valid.into());
    d.insert("b_is_post_merge".into(), run.post_merge.into());
    d.insert("b_is_baseline".into(), run.baseline.into());
    d.insert("b_is_regression".into(), false.into());
    d.insert("ts_created".into(), run.created_unix_ms.into());
    d
}

/// Whether a `_bulk` answer took every one of `n` documents: valid JSON, `errors: false`, `n`
/// items each with a 2xx status.
fn bulk_accepted(text: &str, n: usize) -> Result<(), String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| format!("the answer is not JSON ({e}): {}", cut(text)))?;
    let items = v["items"]
        .as_array()
        .ok_or_else(|| format!("the answer has no items: {}", cut(text)))?;
    let taken = items
        .iter()
        .filter(|i| {
            i.as_object()
                .and_then(|o| o.values().next())
                .and_then(|r| r["status"].as_u64())
                .is_some_and(|s| (200..300).contains(&s))
        })
        .count();
    if v["errors"] == Value::Bool(false) && items.len() == n && taken == n {
        Ok(())
    } else {
        Err(format!(
            "{taken} of {n} documents were taken: {}",
            cut(text)
        ))
    }
}

/// Fields a mark changes after a record is stored; they stay out of its `_id`.
const MUTABLE_FIELDS: &[&str] = &["b_is_valid", "b_is_baseline", "b_is_regression"];

/// `_id`: MD5 of the document's JSON with sorted keys (serde_json's map is sorted), as
/// upstream, leaving out the fields a mark changes (`b_is_valid`, `b_is_baseline`,
/// `b_is_regression`): a record sent again after being marked (an upload whose answer was lost,
/// then `mark-invalid`, then `push`) replaces its document instead of adding a second one.
pub fn doc_id(doc: &Map<String, Value>) -> String {
    let mut doc = doc.clone();
    for k in MUTABLE_FIELDS {
        doc.remove(*k);
    }
    let text = serde_json::to_string(&doc).unwrap_or_default();
    md5::Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `_bulk` NDJSON body: one index action per document, into `<prefix>-YYYY.MM` by the
/// document's `ts_created`.
pub fn bulk_body(prefix: &str, docs: &[Map<String, Value>]) -> String {
    let mut out = String::new();
    for d in docs {
        let ts = d.get("ts_created").and_then(Value::as_u64).unwrap_or(0);
        let month = crate::junit::iso8601(ts)[..7].replace('-', ".");
        let action =
            serde_json::json!({"index": {"_index": format!("{prefix}-{month}"), "_id": doc_id(d)}});
        out.push_str(&action.to_string());
        out.push('\n');
        out.push_str(&Value::Object(d.clone()).to_string());
        out.push('\n');
    }
    out
}

/// A history document read back from OpenSearch as a stored run (negative ids: not in the
/// local store); `None` when it lacks what a baseline needs.
pub fn from_document(i: usize, d: &Map<String, Value>) -> Option<StoredRun> {
    let s = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let b = |k: &str| d.get(k).and_then(Value::as_bool).unwrap_or(false);
    let metrics = d
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("d_")?.to_string(), v.as_f64()?)))
        .collect();
    Some(StoredRun {
        id: -1 - i as i64,
        run_dir: s("s_run_dir"),
        label: s("s_label"),
        config_name: s("s_config_name"),
        config_hash: s("s_config_hash"),
        case_key: s("s_case_key"),
        created_unix_ms: d.get("ts_created")?.as_u64()?,
        valid: b("b_is_valid"),
        post_merge: b("b_is_post_merge"),
        baseline: b("b_is_baseline"),
        identity: BTreeMap::new(),
        job: BTreeMap::new(),
        metrics,
        tool: s("s_tool"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_bodies_index_by_month_with_md5_ids() {
        let mut d = Map::new();
        d.insert("ts_created".into(), 1_795_886_507_000_u64.into());
        d.insert("d_token_throughput".into(), 1.5.into());
        let body = bulk_body("df-x", std::slice::from_ref(&d));
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("\"_index\":\"df-x-2026.11\""),
            "{}",
            lines[0]
        );
        assert_eq!(doc_id(&d).len(), 32);
        assert_ne!(doc_id(&d), doc_id(&Map::new()));
    }

    #[test]
    fn marks_do_not_change_a_documents_id() {
        let mut d = Map::new();
        d.insert("s_run_dir".into(), "/r".into());
        d.insert("b_is_valid".into(), true.into());
        let id = doc_id(&d);
        d.insert("b_is_valid".into(), false.into());
        d.insert("b_is_baseline".into(), true.into());
        assert_eq!(doc_id(&d), id);
        d.insert("s_run_dir".into(), "/other".into());
        assert_ne!(doc_id(&d), id);
    }

    #[test]
    fn only_a_bulk_answer_that_took_every_document_is_success() {
        let ok = r#"{"took":1,"errors":false,"items":[{"index":{"_id":"a","status":201}},{"index":{"_id":"b","status":200}}]}"#;
        assert_eq!(bulk_accepted(ok, 2), Ok(()));
        assert!(bulk_accepted(ok, 3).is_err(), "a missing item");
        let rejected = r#"{"errors":true,"items":[{"index":{"status":429}}]}"#;
        assert!(bulk_accepted(rejected, 1).unwrap_err().contains("0 of 1"));
        for garbage in ["", "{", "<html>502</html>", "null", r#"{"errors":false}"#] {
            assert!(bulk_accepted(garbage, 1).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let env = |k: &str| match k {
            "DISAGG_OPENSEARCH_URL" => Some("http://h:9200/".to_string()),
            "DISAGG_OPENSEARCH_PASSWORD" => Some("s3cret".to_string()),
            "DISAGG_OPENSEARCH_USER" => Some("me".to_string()),
            _ => None,
        };
        let t = Target::from_env(&env).unwrap();
        assert_eq!(t.url, "http://h:9200");
        let shown = format!("{t:?} {}", t.key());
        assert!(
            !shown.contains("s3cret") && !shown.contains("me\""),
            "{shown}"
        );
        assert!(Target::from_env(&|_| None).is_none());
    }
}
