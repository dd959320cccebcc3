//! What a config's file name claims (`..._1k1k_con64_ctx1_dep4_gen1_tep8_eplb0_mtp3_ccb-NIXL`),
//! decoded and compared with what the file says. Names are never the source of truth: a
//! disagreement is a warning that names both.

use serde::Serialize;

use crate::diag::Sink;
use crate::test_config::TestConfig;
use crate::worker::WorkerOptions;

/// A parallelism token such as `dep8`, `tep4`, `tp1`, `pp8`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parallel {
    /// `dep`, `tep`, `tp` or `pp`.
    pub kind: String,
    /// The size.
    pub size: u32,
}

/// The fields a config name encodes. Every field is optional: names of older eras carry fewer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NameFields {
    /// Input length from `<isl>k<osl>k`.
    pub isl: Option<u32>,
    /// Output length.
    pub osl: Option<u32>,
    /// `con<C>`.
    pub con: Option<u32>,
    /// `ctx<N>`.
    pub ctx: Option<u32>,
    /// Parallelism token after `ctx<N>`.
    pub ctx_par: Option<Parallel>,
    /// `bs<B>` after the ctx fields.
    pub ctx_bs: Option<u32>,
    /// `gen<N>`.
    pub gen_: Option<u32>,
    /// Parallelism token after `gen<N>`.
    pub gen_par: Option<Parallel>,
    /// `bs<B>` after the gen fields.
    pub gen_bs: Option<u32>,
    /// `eplb<S>`.
    pub eplb: Option<u32>,
    /// `mtp<K>`.
    pub mtp: Option<u32>,
    /// Cache-transceiver backend from `ccb-<B>` or a trailing `-Default`.
    pub ccb: Option<String>,
}

fn number_after(token: &str, prefix: &str) -> Option<u32> {
    let rest = token.strip_prefix(prefix)?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

fn parallel(token: &str) -> Option<Parallel> {
    ["dep", "tep", "tp", "pp"].iter().find_map(|kind| {
        number_after(token, kind).map(|size| Parallel {
            kind: (*kind).to_string(),
            size,
        })
    })
}

fn lengths(token: &str) -> Option<(u32, u32)> {
    let (a, rest) = token.split_once('k')?;
    let b = rest.strip_suffix('k')?;
    let a: u32 = a.parse().ok()?;
    let b: u32 = b.parse().ok()?;
    Some((a * 1024, b * 1024))
}

const BACKENDS: &[&str] = &["UCX", "NIXL", "MPI", "DEFAULT"];

/// Decode a config name (the file stem).
pub fn decode(name: &str) -> NameFields {
    #[derive(PartialEq)]
    enum Side {
        None,
        Ctx,
        Gen,
    }
    let mut f = NameFields::default();
    let mut side = Side::None;
    for underscore_part in name.split('_') {
        let mut pieces = underscore_part.split('-');
        let token = pieces.next().unwrap_or_default();
        for extra in pieces {
            if f.ccb.is_none() && BACKENDS.iter().any(|b| b.eq_ignore_ascii_case(extra)) {
                f.ccb = Some(extra.to_string());
            }
        }
        if let Some((isl, osl)) = lengths(token) {
            f.isl = Some(isl);
            f.osl = Some(osl);
        } else if let Some(v) = number_after(token, "con") {
            f.con = Some(v);
        } else if let Some(v) = number_after(token, "ctx") {
            f.ctx = Some(v);
            side = Side::Ctx;
        } else if let Some(v) = number_after(token, "gen") {
            f.gen_ = Some(v);
            side = Side::Gen;
        } else if let Some(v) = number_after(token, "eplb") {
            f.eplb = Some(v);
            side = Side::None;
        } else if let Some(v) = number_after(token, "mtp") {
            f.mtp = Some(v);
            side = Side::None;
        } else if let Some(v) = number_after(token, "bs") {
            match side {
                Side::Ctx => f.ctx_bs = Some(v),
                // Era-B names carry one `bs` after the gen fields, or after `ctx.._gen.._tep4`.
                Side::Gen | Side::None => f.gen_bs = Some(v),
            }
        } else if let Some(p) = parallel(token) {
            match side {
                Side::Ctx if f.ctx_par.is_none() => f.ctx_par = Some(p),
                Side::Gen if f.gen_par.is_none() => f.gen_par = Some(p),
                _ => {}
            }
        }
    }
    f
}

/// A length pair as names write it (`1k1k`, `8k1k`; 1000-based lengths too), or spelled out
/// (`isl100osl20`) when a length is no whole number of k.
fn lengths_token(isl: u32, osl: u32) -> String {
    let k = |v: u32| match v {
        0 => None,
        v if v % 1024 == 0 => Some(v / 1024),
        v if v % 1000 == 0 => Some(v / 1000),
        _ => None,
    };
    match (k(isl), k(osl)) {
        (Some(a), Some(b)) => format!("{a}k{b}k"),
        _ => format!("isl{isl}osl{osl}"),
    }
}

/// The name of a config derived from one named `base` (a sweep point): every token of `base`
/// that [`decode`] reads is rewritten from what `config` says — lengths, `con`, `ctx<N>`,
/// `gen<N>`, the parallelism after each, `bs`, `eplb`, `mtp`, the cache-transceiver backend —
/// so the derived name tells the truth and the name check finds nothing to warn about. A `con` token
/// is kept only for a single concurrency. Tokens `base` does not carry are not added.
pub fn rename(base: &str, config: &TestConfig) -> String {
    #[derive(PartialEq)]
    enum Side {
        None,
        Ctx,
        Gen,
    }
    let b = config.benchmark();
    let hw = config.hardware();
    let mut side = Side::None;
    let (mut ctx_par_done, mut gen_par_done) = (false, false);
    let mut parts: Vec<String> = Vec::new();
    for part in base.split('_') {
        let mut pieces = part.split('-');
        let token = pieces.next().unwrap_or_default();
        let extras: Vec<String> = pieces
            .map(|extra| {
                let backend = config
                    .gen_()
                    .cache_transceiver_backend()
                    .unwrap_or("DEFAULT");
                if BACKENDS.iter().any(|b| b.eq_ignore_ascii_case(extra))
                    && !extra.eq_ignore_ascii_case(backend)
                {
                    backend.to_string()
                } else {
                    extra.to_string()
                }
            })
            .collect();
        let new: Option<String> = if lengths(token).is_some() {
            Some(lengths_token(b.isl, b.osl))
        } else if number_after(token, "con").is_some() {
            match b.concurrency.as_slice() {
                [c] => Some(format!("con{c}")),
                _ => None,
            }
        } else if number_after(token, "ctx").is_some() {
            side = Side::Ctx;
            Some(format!("ctx{}", hw.num_ctx_servers))
        } else if number_after(token, "gen").is_some() {
            side = Side::Gen;
            Some(format!("gen{}", hw.num_gen_servers))
        } else if number_after(token, "eplb").is_some() {
            side = Side::None;
            Some(format!("eplb{}", config.gen_().eplb_slots().unwrap_or(0)))
        } else if number_after(token, "mtp").is_some() {
            side = Side::None;
            let k = config.gen_().speculative().map_or(0, |s| s.draft_len);
            Some(format!("mtp{k}"))
        } else if number_after(token, "bs").is_some() {
            let w = if side == Side::Ctx {
                config.ctx()
            } else {
                config.gen_()
            };
            Some(format!("bs{}", w.max_batch_size()))
        } else if let Some(p) = parallel(token) {
            let (w, done) = match side {
                Side::Ctx => (Some(config.ctx()), &mut ctx_par_done),
                Side::Gen => (Some(config.gen_()), &mut gen_par_done),
                Side::None => (None, &mut ctx_par_done),
            };
            match w {
                Some(w) if !*done => {
                    *done = true;
                    Some(match p.kind.as_str() {
                        "dep" | "tep" if w.attention_dp() => format!("dep{}", w.tp()),
                        "dep" | "tep" => format!("tep{}", w.tp()),
                        "pp" => format!("pp{}", w.pp()),
                        _ => format!("tp{}", w.tp()),
                    })
                }
                _ => Some(token.to_string()),
            }
        } else {
            Some(token.to_string())
        };
        match new {
            Some(t) => parts.push(
                std::iter::once(t)
                    .chain(extras)
                    .collect::<Vec<_>>()
                    .join("-"),
            ),
            // A dropped token's suffixes (`-NIXL`) stay, on the part before it.
            None => {
                if let Some(last) = parts.last_mut() {
                    for e in extras {
                        last.push('-');
                        last.push_str(&e);
                    }
                }
            }
        }
    }
    parts.join("_")
}

/// Compare a config's name with its content, recording a warning per disagreement.
pub fn check(sink: &mut Sink, config: &TestConfig) {
    let f = decode(config.name());
    let b = config.benchmark();
    let hw = config.hardware();
    let mut mismatch = |what: &str, path: &str, named: String, actual: String| {
        sink.warning(
            None,
            path,
            Some(actual.clone()),
            format!("the file name says {what} {named}, the config says {actual}"),
            "rename the file or fix the value; the config's value is what runs",
        );
    };
    if let (Some(isl), Some(osl)) = (f.isl, f.osl) {
        // Names round lengths to k (1k = 1024); 1000-based lengths are named the same way.
        let close = |named: u32, actual: u32| named == actual || named / 1024 * 1000 == actual;
        if !close(isl, b.isl) {
            mismatch(
                "input length",
                "benchmark.input_length",
                isl.to_string(),
                b.isl.to_string(),
            );
        }
        if !close(osl, b.osl) {
            mismatch(
                "output length",
                "benchmark.output_length",
                osl.to_string(),
                b.osl.to_string(),
            );
        }
    }
    if let Some(con) = f.con {
        if !b.concurrency.contains(&con) {
            let list = b.concurrency.iter().map(u32::to_string).collect::<Vec<_>>();
            mismatch(
                "concurrency",
                "benchmark.concurrency_list",
                con.to_string(),
                list.join(" "),
            );
        }
    }
    if let Some(ctx) = f.ctx {
        if ctx != hw.num_ctx_servers {
            mismatch(
                "ctx servers",
                "hardware.num_ctx_servers",
                ctx.to_string(),
                hw.num_ctx_servers.to_string(),
            );
        }
    }
    if let Some(gen_) = f.gen_ {
        if gen_ != hw.num_gen_servers {
            mismatch(
                "gen servers",
                "hardware.num_gen_servers",
                gen_.to_string(),
                hw.num_gen_servers.to_string(),
            );
        }
    }
    for (kind, par, bs, w) in [
        ("ctx", &f.ctx_par, f.ctx_bs, config.ctx()),
        ("gen", &f.gen_par, f.gen_bs, config.gen_()),
    ] {
        if let Some(p) = par {
            if let Some(actual) = describe_mismatch(p, w) {
                mismatch(
                    &format!("{kind} parallelism"),
                    &format!("worker_config.{kind}"),
                    format!("{}{}", p.kind, p.size),
                    actual,
                );
            }
        }
        if let Some(bs) = bs {
            if bs != w.max_batch_size() {
                mismatch(
                    &format!("{kind} batch size"),
                    &format!("worker_config.{kind}.max_batch_size"),
                    bs.to_string(),
                    w.max_batch_size().to_string(),
                );
            }
        }
    }
    if let Some(eplb) = f.eplb {
        let actual = config.gen_().eplb_slots().unwrap_or(0);
        if eplb != actual {
            mismatch(
                "EPLB slots",
                "worker_config.gen.moe_config.load_balancer.num_slots",
                eplb.to_string(),
                actual.to_string(),
            );
        }
    }
    if let Some(mtp) = f.mtp {
        // `mtp<K>` names the draft length, whatever the decoding type (Eagle configs use it too).
        let actual = config.gen_().speculative().map_or(0, |s| s.draft_len);
        if mtp != actual {
            mismatch(
                "speculative draft length",
                "worker_config.gen.speculative_config",
                mtp.to_string(),
                actual.to_string(),
            );
        }
    }
    if let Some(ccb) = &f.ccb {
        for (kind, w) in [("ctx", config.ctx()), ("gen", config.gen_())] {
            if kind == "ctx" && config.ctx_servers() == 0 {
                continue;
            }
            let actual = w.cache_transceiver_backend().unwrap_or("DEFAULT");
            if !actual.eq_ignore_ascii_case(ccb) {
                mismatch(
                    "cache-transceiver backend",
                    &format!("worker_config.{kind}.cache_transceiver_config.backend"),
                    ccb.clone(),
                    actual.to_string(),
                );
            }
        }
    }
}

fn describe_mismatch(p: &Parallel, w: &WorkerOptions) -> Option<String> {
    let ok = match p.kind.as_str() {
        "dep" => w.attention_dp() && w.tp() == p.size,
        "tep" => !w.attention_dp() && w.tp() == p.size,
        "tp" => w.tp() == p.size,
        "pp" => w.pp() == p.size,
        _ => true,
    };
    (!ok).then(|| {
        format!(
            "tp {} pp {} attention_dp {}",
            w.tp(),
            w.pp(),
            w.attention_dp()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_current_era_names() {
        let f =
            decode("gb200_deepseek-r1-fp4_1k1k_con2048_ctx2_dep4_gen1_dep16_eplb288_mtp3_ccb-NIXL");
        assert_eq!((f.isl, f.osl, f.con), (Some(1024), Some(1024), Some(2048)));
        assert_eq!((f.ctx, f.gen_), (Some(2), Some(1)));
        assert_eq!(f.ctx_par.unwrap().kind, "dep");
        assert_eq!(f.gen_par.unwrap().size, 16);
        assert_eq!(
            (f.eplb, f.mtp, f.ccb.as_deref()),
            (Some(288), Some(3), Some("NIXL"))
        );
    }

    #[test]
    fn decodes_era_b_names_with_batch_and_suffixes() {
        let f = decode("deepseek-r1-fp4_128k8k_ctx1_pp4_gen13_tep4_bs1_eplb0_mtp0-Default");
        assert_eq!((f.isl, f.osl), (Some(131072), Some(8192)));
        assert_eq!(
            f.ctx_par.unwrap(),
            Parallel {
                kind: "pp".into(),
                size: 4
            }
        );
        assert_eq!(f.gen_, Some(13));
        assert_eq!(f.gen_bs, Some(1));
        assert_eq!(f.ccb.as_deref(), Some("Default"));
        let f = decode(
            "Qwen3-235B-A22B-FP4_1k1k_ctx1_gen1_dep16_bs64_eplb0_mtp0_ccb-NIXL-python-MNNVL",
        );
        assert_eq!(f.ctx_par, None);
        assert_eq!(f.gen_par.unwrap().size, 16);
        assert_eq!(f.gen_bs, Some(64));
        assert_eq!(f.ccb.as_deref(), Some("NIXL"));
        let f =
            decode("gb200-deepseek-r1-fp4_1k1k_ctx1_dep4_bs16_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX");
        assert_eq!((f.ctx_bs, f.gen_bs), (Some(16), Some(768)));
        let f = decode(
            "gb200_gpt-oss-120b-fp4_8k1k_con1024_ctx1_tp1_gen1_tp4_eplb0_mtp0_ccb_kvcmv2-NIXL",
        );
        assert_eq!(f.ccb.as_deref(), Some("NIXL"));
    }

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../../fixtures/trtllm-configs/disaggregated/{name}.yaml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn a_renamed_config_names_what_it_holds() {
        let base = "gb200_deepseek-r1-fp4_1k1k_con1024_ctx1_dep4_gen1_dep8_eplb0_mtp0_ccb-NIXL";
        let text = fixture(base)
            .replace("num_ctx_servers: 1", "num_ctx_servers: 2")
            .replace("input_length: 1024", "input_length: 8192");
        let path = std::path::Path::new("x.yaml");
        let mut config = TestConfig::parse(path, &text).unwrap();
        config = config
            .with_overrides(&crate::Overrides {
                concurrency: Some(vec![4, 16]),
                ..crate::Overrides::default()
            })
            .unwrap();
        let name = rename(base, &config);
        assert_eq!(
            name,
            "gb200_deepseek-r1-fp4_8k1k_ctx2_dep4_gen1_dep8_eplb0_mtp0_ccb-NIXL"
        );
        let renamed = TestConfig::parse(
            std::path::Path::new(&format!("{name}.yaml")),
            &text.replace("concurrency_list: '1024'", "concurrency_list: '4 16'"),
        )
        .unwrap();
        let complaints: Vec<String> = renamed
            .warnings()
            .warnings()
            .filter(|w| w.message.contains("file name"))
            .map(|w| w.message.clone())
            .collect();
        assert!(complaints.is_empty(), "{complaints:?}");
    }

    #[test]
    fn lengths_that_are_no_whole_k_are_spelled_out() {
        assert_eq!(lengths_token(1024, 8192), "1k8k");
        assert_eq!(lengths_token(1000, 2000), "1k2k");
        assert_eq!(lengths_token(64, 16), "isl64osl16");
    }

    #[test]
    fn numbered_names_carry_nothing() {
        assert_eq!(decode("deepseek-r1-fp4_000"), NameFields::default());
    }
}
