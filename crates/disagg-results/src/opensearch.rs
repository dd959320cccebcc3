//! Export to OpenSearch in the upstream document format, and read history back.
//!
//! Documents are flat, with type-prefixed field names (`s_` string, `l_` integer, `d_` float,
//! `b_` bool, `ts_` epoch ms), as upstream's `typeCheckForOpenSearchDB` requires: the run's
//! identity (every field of [`crate::identity::identity`]), upstream's job fields, the metrics
//! as `d_<name>`, `b_is_valid`, `b_is_post_merge`, `b_is_baseline`, the check's
//! `b_is_regression`, `s_regression_info` and inherited `d_baseline_*`/`d_threshold_*`, and
//! `ts_created`/`@timestamp`. `_id` is computed as upstream does it ([`crate::doc_id`]), over the
//! document as it stands when upstream adds it: before the check's fields and without the
//! timestamps (which upstream's posting service adds). They are posted with the standard
//! `_bulk` API (or, with `posting`, upstream's `POST {base}/dataflow2/{project}/posting`, `_id`
//! in the body). History is read with upstream's query ([`Target::history`]). Credentials come
//! from the environment only and are never written anywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::check::maximizes;
use crate::doc_id::doc_id;
use crate::identity::{self, MATCH_KEYS, OWN_MATCH_KEYS};
use crate::store::StoredRun;

/// Most documents one history query returns (upstream's `MAX_QUERY_SIZE`).
pub const MAX_QUERY_SIZE: usize = 5000;

/// A document to post: its `_id` and its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Upstream's `_id`.
    pub id: String,
    /// The fields (without `_id`, which `_bulk` takes in the action line).
    pub body: Map<String, Value>,
}

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
    /// leaves them unsent, and since a document's `_id` does not change, sending it again later
    /// replaces it rather than adding a second copy.
    pub fn post(&self, docs: &[Document]) -> Result<(), String> {
        if docs.is_empty() {
            return Ok(());
        }
        let deadline = std::time::Instant::now() + self.budget;
        let left = || deadline.saturating_duration_since(std::time::Instant::now());
        let (url, body, content_type) = if self.posting {
            let project = self.index.strip_prefix("df-").unwrap_or(&self.index);
            // Upstream posts the `_id` inside each document.
            let bodies: Vec<Map<String, Value>> = docs
                .iter()
                .map(|d| {
                    let mut b = d.body.clone();
                    b.insert("_id".into(), d.id.clone().into());
                    b
                })
                .collect();
            (
                format!("{}/dataflow2/{project}/posting", self.url),
                serde_json::to_string(&bodies).map_err(|e| e.to_string())?,
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

    /// The history of a case as upstream queries it (`get_history_data`): valid post-merge
    /// records that are not baselines, created at or after `since_ms`, with a `term` per match
    /// key of `case` (a `false` boolean also matching documents without the field), at most
    /// [`MAX_QUERY_SIZE`]; then kept when they match `case` on [`MATCH_KEYS`] and
    /// [`OWN_MATCH_KEYS`] by upstream's rule.
    pub fn history(
        &self,
        case: &BTreeMap<String, Value>,
        since_ms: u64,
    ) -> Result<Vec<Map<String, Value>>, String> {
        let query = history_query(case, since_ms);
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
        let keys = || MATCH_KEYS.iter().chain(OWN_MATCH_KEYS).copied();
        Ok(v["hits"]["hits"]
            .as_array()
            .map(|hits| {
                hits.iter()
                    .filter_map(|h| {
                        let mut d = h["_source"].as_object().cloned()?;
                        if let Some(id) = h["_id"].as_str() {
                            d.insert("_id".into(), id.into());
                        }
                        Some(d)
                    })
                    .filter(|d| {
                        let fields: BTreeMap<String, Value> =
                            d.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                        identity::matches(&fields, case, keys())
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Upstream's history query for a case (its match values) since `since_ms`.
pub fn history_query(case: &BTreeMap<String, Value>, since_ms: u64) -> Value {
    let mut must = vec![
        serde_json::json!({"term": {"b_is_valid": true}}),
        serde_json::json!({"term": {"b_is_post_merge": true}}),
        serde_json::json!({"term": {"b_is_baseline": false}}),
        serde_json::json!({"range": {"ts_created": {"gte": since_ms}}}),
    ];
    for key in MATCH_KEYS {
        match case.get(*key) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(false)) => must.push(serde_json::json!({"bool": {
                "should": [
                    {"term": {*key: false}},
                    {"bool": {"must_not": [{"exists": {"field": *key}}]}}
                ],
                "minimum_should_match": 1
            }})),
            Some(v) => must.push(serde_json::json!({"term": {*key: v}})),
        }
    }
    serde_json::json!({"query": {"bool": {"must": must}}, "size": MAX_QUERY_SIZE})
}

fn cut(s: &str) -> String {
    s.chars().take(300).collect()
}

/// A stored run as an upstream-format document, with its `_id`.
pub fn document(run: &StoredRun) -> Document {
    let mut d = Map::new();
    for (k, v) in run.identity.iter().chain(&run.job) {
        // A null would fail upstream's type check.
        if !v.is_null() {
            d.insert(k.clone(), v.clone());
        }
    }
    for (name, v) in &run.metrics {
        if v.is_finite() {
            d.insert(format!("d_{name}"), Value::from(*v));
        }
    }
    d.insert("s_config_name".into(), run.config_name.clone().into());
    d.insert("s_config_hash".into(), run.config_hash.clone().into());
    d.insert("s_run_dir".into(), run.run_dir.clone().into());
    d.insert("s_label".into(), run.label.clone().into());
    d.insert("s_tool".into(), run.tool.clone().into());
    d.insert("b_is_valid".into(), run.valid.into());
    d.insert("b_is_post_merge".into(), run.post_merge.into());
    d.insert("b_is_baseline".into(), run.baseline.into());
    d.insert("b_is_regression".into(), false.into());
    // Upstream hashes the document with `"_id": ""` in it, before the check's fields — here
    // the document as first sent, with the validity the run was stored with and no baseline
    // mark: a record sent again after a mark (`results push` after a lost answer) keeps its
    // `_id` and replaces its document instead of adding a second one.
    let mut first = d.clone();
    first.insert("b_is_valid".into(), run.stored_valid.into());
    first.insert("b_is_baseline".into(), false.into());
    first.insert("_id".into(), "".into());
    let id = doc_id(&first);
    d.insert("b_is_regression".into(), run.regression.into());
    d.insert(
        "s_regression_info".into(),
        run.regression_info.clone().into(),
    );
    for (k, v) in &run.embedded {
        d.insert(k.clone(), Value::from(*v));
    }
    d.insert("ts_created".into(), run.created_unix_ms.into());
    d.insert(
        "@timestamp".into(),
        format!(
            "{}.{:03}Z",
            crate::junit::iso8601(run.created_unix_ms),
            run.created_unix_ms % 1000
        )
        .into(),
    );
    Document { id, body: d }
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

/// The `_bulk` NDJSON body: one index action per document, with its `_id`, into
/// `<prefix>-YYYY.MM` by the document's `ts_created`.
pub fn bulk_body(prefix: &str, docs: &[Document]) -> String {
    let mut out = String::new();
    for d in docs {
        let ts = d
            .body
            .get("ts_created")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let month = crate::junit::iso8601(ts)[..7].replace('-', ".");
        let action =
            serde_json::json!({"index": {"_index": format!("{prefix}-{month}"), "_id": d.id}});
        out.push_str(&action.to_string());
        out.push('\n');
        out.push_str(&Value::Object(d.body.clone()).to_string());
        out.push('\n');
    }
    out
}

/// A history document (ours or upstream's) as a stored run, with negative ids (not in the
/// local store); `None` without `ts_created`. Metrics are the `d_` fields of metrics upstream
/// checks; `d_baseline_*`/`d_threshold_*` are the embedded fields; everything else is identity.
pub fn from_document(i: usize, d: &Map<String, Value>) -> Option<StoredRun> {
    let s = |k: &str| {
        d.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let b = |k: &str| d.get(k).and_then(Value::as_bool).unwrap_or(false);
    let mut metrics = BTreeMap::new();
    let mut embedded = BTreeMap::new();
    let mut identity_fields = BTreeMap::new();
    for (k, v) in d {
        if k.starts_with("d_baseline_") || k.starts_with("d_threshold_") {
            if let Some(f) = v.as_f64() {
                embedded.insert(k.clone(), f);
            }
        } else if let Some(name) = k.strip_prefix("d_").filter(|n| maximizes(n).is_some()) {
            if let Some(f) = v.as_f64() {
                metrics.insert(name.to_string(), f);
            }
        } else {
            identity_fields.insert(k.clone(), v.clone());
        }
    }
    // Upstream accepts seconds or milliseconds (`if ts > 1e12: ts /= 1000`).
    let ts = d.get("ts_created")?.as_f64()?;
    let created = if ts > 1e12 { ts } else { ts * 1000.0 } as u64;
    let label = match s("s_label") {
        l if !l.is_empty() => l,
        _ => format!(
            "con{}",
            d.get("l_concurrency").and_then(Value::as_u64).unwrap_or(0)
        ),
    };
    let run_dir = match s("s_run_dir") {
        r if !r.is_empty() => r,
        _ => format!("opensearch:{}", s("_id")),
    };
    let match_key =
        identity::match_key(&identity::match_values(&identity_fields, &BTreeMap::new()));
    Some(StoredRun {
        id: -1 - i as i64,
        run_dir,
        label,
        config_name: s("s_config_name"),
        config_hash: s("s_config_hash"),
        case_key: String::new(),
        match_key,
        created_unix_ms: created,
        valid: b("b_is_valid"),
        stored_valid: b("b_is_valid"),
        post_merge: b("b_is_post_merge"),
        baseline: b("b_is_baseline"),
        identity: identity_fields,
        job: BTreeMap::new(),
        metrics,
        tool: s("s_tool"),
        regression: b("b_is_regression"),
        regression_info: s("s_regression_info"),
        embedded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored() -> StoredRun {
        StoredRun {
            id: 3,
            run_dir: "/runs/a".into(),
            label: "con4".into(),
            config_name: "cfg".into(),
            config_hash: "h".into(),
            case_key: "k".into(),
            match_key: "m".into(),
            created_unix_ms: 1_795_886_507_123,
            valid: true,
            stored_valid: true,
            post_merge: true,
            baseline: false,
            identity: BTreeMap::from([
                (
                    "s_test_case_name".to_string(),
                    Value::from("e2e-cfg-con4_iter4_isl8_osl8"),
                ),
                ("s_gpu_type".to_string(), Value::from("gb200")),
                (
                    "s_runtime".to_string(),
                    Value::from("multi_node_disagg_server"),
                ),
                ("l_concurrency".to_string(), Value::from(4)),
            ]),
            job: BTreeMap::from([("s_branch".to_string(), Value::from("main"))]),
            metrics: BTreeMap::from([("token_throughput".to_string(), 100.0)]),
            tool: "disagg test".into(),
            regression: true,
            regression_info: "Regression in e2e-cfg-con4_iter4_isl8_osl8:".into(),
            embedded: BTreeMap::from([("d_baseline_token_throughput".to_string(), 120.0)]),
        }
    }

    /// Upstream's `typeCheckForOpenSearchDB`: every key has a known prefix and its type.
    fn upstream_type_check(d: &Map<String, Value>) -> Result<(), String> {
        for (k, v) in d {
            let ok = if k.starts_with("l_") || k.starts_with("ts_") {
                v.is_i64() || v.is_u64()
            } else if k.starts_with("d_") {
                v.is_f64()
            } else if k.starts_with("s_") {
                v.is_string()
            } else if k.starts_with("b_") {
                v.is_boolean()
            } else {
                ["@timestamp", "_id"].contains(&k.as_str())
            };
            if !ok {
                return Err(format!("{k} = {v}"));
            }
        }
        Ok(())
    }

    #[test]
    fn documents_pass_upstreams_type_check_and_read_back() {
        let run = stored();
        let doc = document(&run);
        upstream_type_check(&doc.body).unwrap();
        assert_eq!(doc.body["b_is_regression"], true);
        assert_eq!(doc.body["d_baseline_token_throughput"], 120.0);
        assert_eq!(doc.body["@timestamp"], "2026-11-28T17:21:47.123Z");
        assert!(
            !doc.body.contains_key("_id"),
            "_bulk takes it in the action"
        );
        let back = from_document(0, &doc.body).unwrap();
        assert_eq!(back.metrics, run.metrics);
        assert_eq!(back.embedded, run.embedded);
        assert!(back.regression && back.valid && back.post_merge);
        assert_eq!(back.created_unix_ms, run.created_unix_ms);
        assert_eq!(
            back.match_key,
            identity::match_key(&identity::match_values(&run.identity, &run.job))
        );
        // Non-metric d_ fields stay identity, not metrics.
        let mut with_ratio = doc.body.clone();
        with_ratio.insert("d_random_range_ratio".into(), 0.0.into());
        let back = from_document(0, &with_ratio).unwrap();
        assert!(!back.metrics.contains_key("random_range_ratio"));
    }

    #[test]
    fn the_id_is_taken_before_the_checks_fields() {
        let mut run = stored();
        let a = document(&run).id;
        run.regression = false;
        run.regression_info.clear();
        run.embedded.clear();
        run.created_unix_ms += 1;
        assert_eq!(
            document(&run).id,
            a,
            "verdict and timestamps are not hashed"
        );
        run.metrics.insert("token_throughput".into(), 99.0);
        assert_ne!(document(&run).id, a);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn bulk_bodies_index_by_month_with_the_ids() {
        let doc = document(&stored());
        let body = bulk_body("df-x", std::slice::from_ref(&doc));
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("\"_index\":\"df-x-2026.11\"") && lines[0].contains(&doc.id),
            "{}",
            lines[0]
        );
    }

    #[test]
    fn the_history_query_is_upstreams() {
        let case = BTreeMap::from([
            (
                "s_test_case_name".to_string(),
                Value::from("e2e-x-con1_iter1_isl8_osl8"),
            ),
            ("s_branch".to_string(), Value::from("")),
            ("s_engine".to_string(), Value::from("sim")),
        ]);
        let q = history_query(&case, 1000);
        let must = q["query"]["bool"]["must"].as_array().unwrap();
        assert_eq!(must[0], serde_json::json!({"term": {"b_is_valid": true}}));
        assert_eq!(
            must[1],
            serde_json::json!({"term": {"b_is_post_merge": true}})
        );
        assert_eq!(
            must[2],
            serde_json::json!({"term": {"b_is_baseline": false}})
        );
        assert_eq!(
            must[3],
            serde_json::json!({"range": {"ts_created": {"gte": 1000}}})
        );
        // Upstream's common values: every match key with a value, "" included; our own keys
        // are matched after the query.
        assert_eq!(
            &must[4..],
            &[
                serde_json::json!({"term": {"s_test_case_name": "e2e-x-con1_iter1_isl8_osl8"}}),
                serde_json::json!({"term": {"s_branch": ""}}),
            ]
        );
        assert_eq!(q["size"], 5000);
    }

    #[test]
    fn marks_do_not_change_a_documents_id() {
        let run = stored();
        let first = document(&run);
        let mut marked = run.clone();
        marked.valid = false;
        marked.baseline = true;
        let again = document(&marked);
        assert_eq!(again.id, first.id);
        assert_eq!(
            again.body["b_is_valid"], false,
            "the document says what the mark says"
        );
        let mut other = run;
        other.run_dir = "/other".into();
        assert_ne!(document(&other).id, first.id);
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
