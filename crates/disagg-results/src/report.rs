//! `report.html`: one self-contained file (inline CSS and SVG, no network) with the verdict,
//! the summary, latency and throughput versus concurrency, the Pareto curve, the history of the
//! gated metrics with baseline and threshold band, a comparison across runs, and the metadata.

use std::fmt::Write as _;

use crate::check::Row;
use crate::junit::{escape, iso8601};
use crate::record::RunRecord;
use crate::summary::Summary;
use crate::svg::{self, Band, Series};

/// One run as the report sees it.
#[derive(Debug, Clone)]
pub struct RunData {
    /// Short name (config name, or `configuration_N` in comparisons).
    pub name: String,
    /// Its summary.
    pub summary: Summary,
    /// Its records, by concurrency.
    pub records: Vec<RunRecord>,
    /// GPUs the plan uses (for tok/s per GPU).
    pub gpus: u32,
    /// `(key, value)` lines for the metadata section.
    pub meta: Vec<(String, String)>,
    /// The config text.
    pub config_text: String,
}

/// The history of one gated metric of one concurrency.
#[derive(Debug, Clone)]
pub struct History {
    /// `con8`.
    pub label: String,
    /// Upstream metric name.
    pub metric: String,
    /// `(time ms, value)`, this run last.
    pub points: Vec<(u64, f64)>,
    /// The baseline the check used.
    pub baseline: Option<f64>,
    /// Its threshold.
    pub threshold: f64,
    /// More is better.
    pub maximize: bool,
}

const CSS: &str = "body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}.pass,.valid,.passed{color:#1a7f37;font-weight:bold}.regression,.invalid,.failed,.not_run{color:#c62828;font-weight:bold}.charts{display:flex;flex-wrap:wrap;gap:8px}.chart{page-break-inside:avoid}pre{background:#f7f7f7;padding:8px;font-size:11px;overflow:auto;max-height:400px}@page{size:A4;margin:12mm}@media print{.charts svg{width:100%;height:auto}}";

fn p99(s: &disagg_bench::stats::Summary) -> f64 {
    s.percentile(99.0).unwrap_or(f64::NAN)
}

fn by_concurrency(records: &[RunRecord]) -> Vec<(f64, &RunRecord)> {
    let mut v: Vec<(f64, &RunRecord)> = records
        .iter()
        .filter_map(|r| Some((f64::from(r.concurrency()?), r)))
        .collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

fn latency_charts(out: &mut String, run: &RunData) {
    let recs = by_concurrency(&run.records);
    out.push_str("<div class=\"charts\">");
    type Pick = fn(&RunRecord) -> &disagg_bench::stats::Summary;
    let metrics: [(&str, Pick); 4] = [
        ("TTFT", |r| &r.metrics.ttft_ms),
        ("TPOT", |r| &r.metrics.tpot_ms),
        ("ITL", |r| &r.metrics.itl_ms),
        ("E2EL", |r| &r.metrics.e2el_ms),
    ];
    for (name, pick) in metrics {
        let series = vec![
            Series {
                name: "median".into(),
                points: recs.iter().map(|(c, r)| (*c, pick(r).median)).collect(),
            },
            Series {
                name: "p99".into(),
                points: recs.iter().map(|(c, r)| (*c, p99(pick(r)))).collect(),
            },
        ];
        let _ = write!(
            out,
            "<div class=\"chart\">{}</div>",
            svg::lines(
                &format!("{name} vs concurrency"),
                "concurrency",
                "ms",
                &series,
                true,
                None
            )
        );
    }
    let thr = vec![Series {
        name: "output tok/s".into(),
        points: recs
            .iter()
            .map(|(c, r)| (*c, r.metrics.output_throughput))
            .collect(),
    }];
    let _ = write!(
        out,
        "<div class=\"chart\">{}</div>",
        svg::lines(
            "Output throughput vs concurrency",
            "concurrency",
            "tok/s",
            &thr,
            true,
            None
        )
    );
    let gpus = f64::from(run.gpus.max(1));
    let mut pareto: Vec<(f64, f64)> = recs
        .iter()
        .map(|(_, r)| {
            (
                r.metrics.user_throughput,
                r.metrics.output_throughput / gpus,
            )
        })
        .collect();
    pareto.sort_by(|a, b| a.0.total_cmp(&b.0));
    let _ = write!(
        out,
        "<div class=\"chart\">{}</div>",
        svg::lines(
            "Pareto: throughput per GPU vs per user",
            "tok/s per user",
            "output tok/s per GPU",
            &[Series {
                name: run.name.clone(),
                points: pareto
            }],
            false,
            None
        )
    );
    out.push_str("</div>");
}

fn summary_table(out: &mut String, s: &Summary) {
    out.push_str("<table><tr><th class=\"l\">run</th><th>requests</th><th>failed</th><th>req/s</th><th>out tok/s</th><th>tok/s/user</th><th>TTFT p50</th><th>TTFT p99</th><th>TPOT p50</th><th>ITL p50</th><th>E2EL p50</th><th>E2EL p99</th><th class=\"l\">status</th></tr>");
    for r in &s.runs {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.1}</td><td>{:.1}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.1}</td><td>{:.1}</td><td class=\"l {st}\">{st}{why}</td></tr>",
            escape(&r.label),
            r.requests,
            r.failed,
            r.request_throughput,
            r.output_throughput,
            r.user_throughput,
            r.ttft_median_ms,
            r.ttft_p99_ms,
            r.tpot_median_ms,
            r.itl_median_ms,
            r.e2el_median_ms,
            r.e2el_p99_ms,
            st = escape(&r.status),
            why = if r.reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", escape(&r.reasons.join("; ")))
            }
        );
    }
    out.push_str("</table>");
}

fn check_table(out: &mut String, rows: &[Row]) {
    if rows.is_empty() {
        out.push_str("<p>No check was run (no stored history, or the run failed).</p>");
        return;
    }
    out.push_str("<table><tr><th class=\"l\">run</th><th class=\"l\">metric</th><th>value</th><th>baseline</th><th>threshold</th><th>diff</th><th class=\"l\">verdict</th></tr>");
    for r in rows {
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{:.2}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td class=\"l {v}\">{v}</td></tr>",
            escape(&r.run),
            escape(&r.metric),
            r.value,
            r.baseline.map_or("-".into(), |b| format!("{b:.2}")),
            r.threshold * 100.0,
            r.diff.map_or("-".into(), |d| format!("{:+.2}%", d * 100.0)),
            v = r.verdict
        );
    }
    out.push_str("</table>");
}

fn history_charts(out: &mut String, history: &[History]) {
    out.push_str("<div class=\"charts\">");
    for h in history {
        let t0 = h.points.first().map_or(0, |p| p.0);
        let points: Vec<(f64, f64)> = h
            .points
            .iter()
            .map(|(t, v)| (t.saturating_sub(t0) as f64 / 86_400_000.0, *v))
            .collect();
        let band = h.baseline.map(|b| {
            let (lo, hi) = if h.maximize {
                (b * (1.0 - h.threshold), b)
            } else {
                (b, b * (1.0 + h.threshold))
            };
            Band {
                mid: b,
                low: lo,
                high: hi,
            }
        });
        let _ = write!(
            out,
            "<div class=\"chart\">{}</div>",
            svg::lines(
                &format!("{} {} history", h.label, h.metric),
                "days since the first stored run",
                &h.metric,
                &[Series {
                    name: h.metric.clone(),
                    points
                }],
                false,
                band
            )
        );
    }
    out.push_str("</div>");
}

fn compare_section(out: &mut String, runs: &[RunData]) {
    out.push_str("<h2>Comparison</h2><table><tr><th class=\"l\">short name</th><th class=\"l\">run</th></tr>");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(
            out,
            "<tr><td class=\"l\">configuration_{i}</td><td class=\"l\">{} ({})</td></tr>",
            escape(&r.name),
            escape(&r.summary.run_dir)
        );
    }
    out.push_str("</table><div class=\"charts\">");
    let mut labels: Vec<String> = Vec::new();
    for r in runs {
        for s in &r.summary.runs {
            if !labels.contains(&s.label) {
                labels.push(s.label.clone());
            }
        }
    }
    type Pick = fn(&crate::summary::RunSummary) -> f64;
    let metrics: [(&str, Pick); 6] = [
        ("output tok/s", |r| r.output_throughput),
        ("req/s", |r| r.request_throughput),
        ("tok/s per user", |r| r.user_throughput),
        ("TTFT p50 (ms)", |r| r.ttft_median_ms),
        ("TPOT p50 (ms)", |r| r.tpot_median_ms),
        ("E2EL p50 (ms)", |r| r.e2el_median_ms),
    ];
    for (name, pick) in metrics {
        let mut series: Vec<Series> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| Series {
                name: format!("configuration_{i}"),
                points: labels
                    .iter()
                    .map(|l| {
                        let v = r
                            .summary
                            .runs
                            .iter()
                            .find(|s| &s.label == l && s.status != "not_run");
                        (0.0, v.map_or(f64::NAN, pick))
                    })
                    .collect(),
            })
            .collect();
        // As upstream: a `mean` series across the runs.
        let mean = (0..labels.len())
            .map(|g| {
                let vals: Vec<f64> = series
                    .iter()
                    .map(|s| s.points[g].1)
                    .filter(|v| v.is_finite())
                    .collect();
                (
                    0.0,
                    if vals.is_empty() {
                        f64::NAN
                    } else {
                        vals.iter().sum::<f64>() / vals.len() as f64
                    },
                )
            })
            .collect();
        series.push(Series {
            name: "mean".into(),
            points: mean,
        });
        let _ = write!(
            out,
            "<div class=\"chart\">{}</div>",
            svg::bars(&format!("Comparison for {name}"), name, &labels, &series)
        );
    }
    out.push_str("</div>");
}

/// Per record with telemetry: the servers' KV usage and queue depth against time beside the
/// client's output throughput, and for an invalid or regressed record what the telemetry says
/// about it.
fn telemetry_section(out: &mut String, run: &RunData, checks: &[Row]) {
    let with: Vec<&RunRecord> = run
        .records
        .iter()
        .filter(|r| r.telemetry.is_some())
        .collect();
    if with.is_empty() {
        return;
    }
    out.push_str("<h2>Telemetry</h2><p>What the workers and the router reported during each run (read every second), beside the client's output throughput.</p>");
    for r in with {
        let Some(t) = &r.telemetry else { continue };
        let regressed = checks
            .iter()
            .any(|c| c.run == r.load && c.verdict == "regression");
        let _ = write!(out, "<h3>{}</h3>", escape(&r.load));
        if let Some(d) = crate::diagnosis::Diagnosis::of(r, regressed) {
            let _ = write!(out, "<p>{}</p>", escape(&d.heading()));
            if !d.lines.is_empty() {
                out.push_str("<ul>");
                for l in &d.lines {
                    let _ = write!(out, "<li>{}</li>", escape(l));
                }
                out.push_str("</ul>");
            }
        }
        let per_target = |pick: fn(&disagg_bench::telemetry::TargetSummary) -> &Vec<(f64, f64)>,
                          scale: f64|
         -> Vec<Series> {
            t.targets
                .iter()
                .filter(|x| !pick(x).is_empty())
                .map(|x| Series {
                    name: x.name.clone(),
                    points: pick(x).iter().map(|&(a, b)| (a, b * scale)).collect(),
                })
                .collect()
        };
        out.push_str("<div class=\"charts\">");
        for (title, y, series) in [
            (
                "KV-cache usage",
                "% of the cache",
                per_target(|x| &x.kv_usage_series, 100.0),
            ),
            (
                "Requests queued",
                "requests",
                per_target(|x| &x.queue_series, 1.0),
            ),
            (
                "Client output throughput",
                "tokens/s",
                vec![Series {
                    name: "client".into(),
                    points: t.client_output_tokens_per_s.clone(),
                }],
            ),
        ] {
            let _ = write!(
                out,
                "<div class=\"chart\">{}</div>",
                svg::lines(
                    &format!("{title} — {}", r.load),
                    "seconds into the run",
                    y,
                    &series,
                    false,
                    None
                )
            );
        }
        out.push_str("</div><table><tr><th class=\"l\">target</th><th>reads</th><th>KV mean</th><th>KV max</th><th>queue mean</th><th>queue max</th><th>cache hit rate</th></tr>");
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1} %", v * 100.0));
        let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        for x in &t.targets {
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&x.name),
                x.scrapes,
                pct(x.kv_usage.map(|k| k.mean)),
                pct(x.kv_usage.map(|k| k.max)),
                num(x.queue.map(|q| q.mean)),
                num(x.queue.map(|q| q.max)),
                pct(x.cache_hit_rate),
            );
        }
        out.push_str("</table>");
        for g in &t.gpus {
            let _ = write!(
                out,
                "<p>GPU {}{}: utilization {} %, memory {} MiB, power {} W (mean)</p>",
                g.index,
                g.source
                    .as_deref()
                    .map_or(String::new(), |s| format!(" ({}, DCGM)", escape(s))),
                num(g.utilization.map(|u| u.mean)),
                num(g.memory_used_mib.map(|u| u.mean)),
                num(g.power_w.map(|u| u.mean)),
            );
        }
        for w in &t.warnings {
            let _ = write!(out, "<p>warning: {}</p>", escape(w));
        }
    }
}

/// The whole report.
pub fn render(run: &RunData, checks: &[Row], history: &[History], compare: &[RunData]) -> String {
    let s = &run.summary;
    let regressed = checks.iter().any(|r| r.verdict == "regression");
    let verdict = match (s.outcome, regressed) {
        (crate::summary::Outcome::Passed, true) => "regression".to_string(),
        (o, _) => format!("{o:?}").to_lowercase(),
    };
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} — disagg report</title><style>{CSS}</style></head><body><h1>{t}</h1><p>Verdict: <span class=\"{verdict}\">{verdict}</span>{why} · started {} UTC · {:.1} s · {}</p>",
        iso8601(s.started_unix_ms),
        s.duration_s,
        escape(&s.run_dir),
        t = escape(&run.name),
        why = s
            .reason
            .as_ref()
            .map_or(String::new(), |r| format!(" ({})", escape(r))),
    );
    out.push_str("<h2>Summary</h2>");
    summary_table(&mut out, s);
    out.push_str("<h2>Regression check</h2>");
    check_table(&mut out, checks);
    out.push_str("<h2>Latency and throughput</h2>");
    latency_charts(&mut out, run);
    telemetry_section(&mut out, run, checks);
    if !history.is_empty() {
        out.push_str("<h2>History of the gated metrics</h2><p>Shaded: the baseline and its threshold; a point outside it on the bad side is a regression.</p>");
        history_charts(&mut out, history);
    }
    if compare.len() > 1 {
        compare_section(&mut out, compare);
    }
    out.push_str("<h2>Metadata</h2><table>");
    for (k, v) in &run.meta {
        let _ = write!(
            out,
            "<tr><th class=\"l\">{}</th><td class=\"l\">{}</td></tr>",
            escape(k),
            escape(v)
        );
    }
    let _ = writeln!(
        out,
        "</table><h2>Config</h2><pre>{}</pre><p>Generated by disagg {}.</p></body></html>",
        escape(&run.config_text),
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// The x (tok/s per user) at which a TPOT limit of the SLA sits: a user sees about one token
/// per TPOT, so `1000 / limit`. `None` when the SLA bounds no TPOT.
fn tpot_limit_x(sla: &disagg_config::Sla) -> Option<(f64, String)> {
    let l = sla
        .limits
        .iter()
        .filter(|l| l.metric.ends_with("_tpot"))
        .min_by(|a, b| a.max_ms.total_cmp(&b.max_ms))?;
    Some((
        1000.0 / l.max_ms,
        format!("SLA {} ≤ {} ms", l.metric, l.max_ms),
    ))
}

/// A sweep's page: the SLA answer, the frontier chart with every point (one line per point over
/// its concurrencies, the frontier in front, the SLA's TPOT limit as a vertical line), the
/// points, every measurement, and the failed or skipped points with their reasons.
pub fn render_sweep(doc: &crate::sweep::SweepDoc) -> String {
    use crate::sweep::pareto;
    let all = doc.measurements();
    let front = pareto(&all);
    let count = |state: &str| doc.points.iter().filter(|p| p.state == state).count();
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sweep {t} — disagg report</title><style>{CSS}</style></head><body><h1>Sweep {t}</h1><p>{} points: <span class=\"passed\">{} passed</span>, <span class=\"failed\">{} failed</span>, {} invalid, {} skipped, {} pending · {} · base {} · started {} UTC</p>",
        doc.points.len(),
        count("passed"),
        count("failed") + count("interrupted"),
        count("invalid"),
        count("skipped"),
        count("pending"),
        escape(&doc.launcher),
        escape(&doc.base),
        iso8601(doc.started_unix_ms),
        t = escape(&doc.sweep_id),
    );
    out.push_str("<h2>SLA answer</h2>");
    match (&doc.sla, &doc.best) {
        (None, _) => out.push_str("<p>No SLA given (spec `sla:` or `--sla`).</p>"),
        (Some(sla), None) => {
            let _ = write!(
                out,
                "<p class=\"failed\">No measurement meets the SLA ({}).</p>",
                escape(&sla.to_string())
            );
        }
        (Some(sla), Some(b)) => {
            let config = doc
                .points
                .iter()
                .find(|p| p.name == b.point)
                .map_or("", |p| p.config.as_str());
            let _ = write!(
                out,
                "<p>Under {}: <b>{}</b> at concurrency {} — {:.1} output tok/s per GPU, {:.1} tok/s per user. Config: <code>{}</code></p>",
                escape(&sla.to_string()),
                escape(&b.point),
                b.concurrency,
                b.output_tok_s_per_gpu,
                b.user_tok_s,
                escape(config)
            );
        }
    }
    out.push_str("<h2>Frontier</h2><div class=\"charts\">");
    let mut series: Vec<Series> = Vec::new();
    for p in &doc.points {
        let mut pts: Vec<(u32, f64, f64)> = p
            .measurements
            .iter()
            .map(|m| (m.concurrency, m.user_tok_s, m.output_tok_s_per_gpu))
            .collect();
        if pts.is_empty() {
            continue;
        }
        pts.sort_by_key(|t| t.0);
        series.push(Series {
            name: p.name.clone(),
            points: pts.iter().map(|t| (t.1, t.2)).collect(),
        });
    }
    let frontier = Series {
        name: "Pareto frontier".into(),
        points: front
            .iter()
            .map(|&i| (all[i].user_tok_s, all[i].output_tok_s_per_gpu))
            .collect(),
    };
    let limit = doc.sla.as_ref().and_then(tpot_limit_x);
    let _ = write!(
        out,
        "<div class=\"chart\">{}</div></div>",
        svg::lines_with_limit(
            "Output tok/s per GPU vs tok/s per user",
            "tok/s per user",
            "output tok/s per GPU",
            Some(&frontier),
            &series,
            limit.as_ref().map(|(x, l)| (*x, l.as_str()))
        )
    );
    out.push_str("<h2>Points</h2><table><tr><th class=\"l\">point</th><th class=\"l\">state</th><th>nodes</th><th>GPUs (servers)</th><th class=\"l\">axes</th><th>runs</th><th>best tok/s/GPU</th><th>SLA concurrency</th></tr>");
    for p in &doc.points {
        let best = p
            .measurements
            .iter()
            .map(|m| m.output_tok_s_per_gpu)
            .fold(f64::NAN, f64::max);
        let axes: Vec<String> = p
            .assignments
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l {s}\">{s}</td><td>{}</td><td>{} ({})</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.name),
            p.nodes,
            p.gpus,
            p.server_gpus,
            escape(&axes.join(", ")),
            p.runs.len(),
            if best.is_finite() {
                format!("{best:.1}")
            } else {
                "-".into()
            },
            p.sla_concurrency.map_or("-".to_string(), |c| c.to_string()),
            s = escape(&p.state),
        );
    }
    out.push_str("</table><h2>Measurements</h2><table><tr><th class=\"l\">point</th><th>concurrency</th><th>out tok/s/GPU</th><th>tok/s/user</th><th>TTFT p99</th><th>TPOT median</th><th>E2EL p99</th><th class=\"l\">SLA</th><th class=\"l\">frontier</th></tr>");
    for (i, m) in all.iter().enumerate() {
        let lat = |k: &str| {
            m.latency_ms
                .get(k)
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        };
        let sla = match m.meets_sla {
            None => String::new(),
            Some(true) => "<span class=\"pass\">meets</span>".to_string(),
            Some(false) => format!(
                "<span class=\"failed\">misses</span> {}",
                escape(&m.violations.join("; "))
            ),
        };
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{sla}</td><td class=\"l\">{}</td></tr>",
            escape(&m.point),
            m.concurrency,
            m.output_tok_s_per_gpu,
            m.user_tok_s,
            lat("p99_ttft"),
            lat("median_tpot"),
            lat("p99_e2el"),
            if front.contains(&i) { "yes" } else { "" },
        );
    }
    out.push_str("</table>");
    let troubled: Vec<_> = doc
        .points
        .iter()
        .filter(|p| p.reason.is_some() && p.state != "passed")
        .collect();
    if !troubled.is_empty() {
        out.push_str("<h2>Failed and skipped points</h2><table><tr><th class=\"l\">point</th><th class=\"l\">state</th><th class=\"l\">reason</th></tr>");
        for p in troubled {
            let _ = write!(
                out,
                "<tr><td class=\"l\">{}</td><td class=\"l {s}\">{s}</td><td class=\"l\">{}</td></tr>",
                escape(&p.name),
                escape(p.reason.as_deref().unwrap_or_default()),
                s = escape(&p.state),
            );
        }
        out.push_str("</table>");
    }
    let _ = write!(
        out,
        "<p>sweep.json: version {} · {} measurements · report by disagg {}</p></body></html>",
        doc.sweep_version,
        all.len(),
        env!("CARGO_PKG_VERSION")
    );
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sweep::{Measurement, PointDoc, SWEEP_VERSION, SweepDoc};

    fn point(name: &str, state: &str, ms: Vec<Measurement>) -> PointDoc {
        PointDoc {
            name: name.into(),
            config: format!("/s/points/{name}.yaml"),
            key: "k".into(),
            assignments: vec![("hardware.num_gen_servers".into(), "1".into())],
            nodes: 2,
            gpus: 8,
            server_gpus: 2,
            idle_gpus: 6,
            state: state.into(),
            reason: (state != "passed").then(|| "GEN_0 <died>".to_string()),
            runs: Vec::new(),
            measurements: ms,
            sla_concurrency: None,
        }
    }

    fn m(point: &str, c: u32, user: f64, per_gpu: f64, meets: bool) -> Measurement {
        Measurement {
            point: point.into(),
            label: format!("con{c}"),
            concurrency: c,
            gpus: 2,
            output_tok_s: per_gpu * 2.0,
            output_tok_s_per_gpu: per_gpu,
            user_tok_s: user,
            latency_ms: BTreeMap::from([("median_tpot".to_string(), 1000.0 / user)]),
            run_dir: "/r".into(),
            meets_sla: Some(meets),
            violations: Vec::new(),
        }
    }

    #[test]
    fn a_sweep_page_shows_the_answer_the_frontier_and_the_failures() {
        let a = vec![m("a", 1, 100.0, 10.0, true), m("a", 8, 40.0, 50.0, false)];
        let best = a[0].clone();
        let doc = SweepDoc {
            sweep_version: SWEEP_VERSION,
            sweep_id: "s-1".into(),
            spec: "/s.yaml".into(),
            base: "/b.yaml".into(),
            launcher: "local".into(),
            max_parallel: 1,
            sla: Some(disagg_config::Sla::parse_flag("median_tpot_ms=20").unwrap()),
            started_unix_ms: 0,
            updated_unix_ms: 0,
            elapsed_s: 1.0,
            points: vec![point("a", "passed", a), point("b", "failed", Vec::new())],
            best: Some(best),
        };
        let html = render_sweep(&doc);
        assert!(html.contains("Under median_tpot ≤ 20 ms: <b>a</b> at concurrency 1"));
        assert!(html.contains("<code>/s/points/a.yaml</code>"));
        assert!(html.contains("Pareto frontier") && html.contains("class=\"limit\""));
        assert!(html.contains("SLA median_tpot ≤ 20 ms"));
        assert!(html.contains("GEN_0 &lt;died&gt;"), "reasons are escaped");
        assert!(!html.contains("<script"));
    }
}
