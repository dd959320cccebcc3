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
    /// `DISAGG_OPENSEARCH_PASSWORD`. `None` when no URL is configured.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Option<Target> {
        let url = env("DISAGG_OPENSEARCH_URL").filter(|u| !u.is_empty())?;
        Some(Target {
            url: url.trim_end_matches('/').to_string(),
            index: env("DISAGG_OPENSEARCH_INDEX").unwrap_or_else(|| "df-disagg-perf".to_string()),
            posting: env("DISAGG_OPENSEARCH_POSTING").is_some_and(|v| v == "1" || v == "true"),
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

    /// Post documents; retried with backoff (0.5 s, 1 s, 2 s) on connection errors and 5xx.
    pub fn post(&self, docs: &[Map<String, Value>]) -> Result<(), String> {
        if docs.is_empty() {
            return Ok(());
        }
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
        let agent = self.agent(Duration::from_secs(20));
        if !self.posting {
            // The prefixes' types, as upstream's indices have them (strings as keywords, so
            // `term` filters match whole values); best effort — an existing template stays.
            let _ = self.put_template(&agent);
        }
        let mut last = String::new();
        for attempt in 0..4 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << (attempt - 1)));
            }
            let mut req = agent.post(&url).header("Content-Type", content_type);
            if let Some(a) = self.auth() {
                req = req.header("Authorization", a);
            }
            match req.send(body.as_str()) {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.body_mut().read_to_string().unwrap_or_default();
                    if (200..300).contains(&status) {
                        // _bulk answers 200 with per-item errors.
                        if !self.posting && text.contains("\"errors\":true") {
                            return Err(format!(
                                "{url}: some documents were rejected: {}",
                                cut(&text)
                            ));
                        }
                        return Ok(());
                    }
                    last = format!("{url}: HTTP {status}: {}", cut(&text));
                    if status < 500 {
                        return Err(last);
                    }
                }
                Err(e) => last = format!("{url}: {e}"),
            }
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
            .agent(Duration::from_secs(10))
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

/// `_id`: MD5 of the document's JSON with sorted keys (serde_json's map is sorted).
pub fn doc_id(doc: &Map<String, Value>) -> String {
    let text = serde_json::to_string(doc).unwrap_or_default();
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
