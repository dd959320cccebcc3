//! Hostile input (docs/RELIABILITY.md): thousands of mangled test configs, cluster profiles and
//! coordinator configs (`server_config.yaml`). Every one is read to an answer — a config or a
//! list of problems with positions — without a panic, and quickly: a document whose aliases
//! would expand to billions of values is refused, not expanded.

use std::path::Path;
use std::time::{Duration, Instant};

use disagg_config::{ClusterFile, CoordinatorConfig, TestConfig};
use proptest::prelude::*;

const TEST_CONFIG: &str = include_str!("../../../examples/local-sim.yaml");
const UPSTREAM: &str = include_str!(
    "../../../fixtures/trtllm-configs/disaggregated/b200_deepseek-r1-fp4_1k1k_con1_ctx1_dep4_gen1_tep8_eplb0_mtp3_ccb-NIXL.yaml"
);
const CLUSTERS: &str = include_str!("../../disagg/tests/data/clusters.yaml");
const SERVER_CONFIG: &str = "backend: pytorch\ncontext_servers:\n  num_instances: 1\n  urls:\n  - \"n1:8001\"\ngeneration_servers:\n  num_instances: 2\n  urls:\n  - \"n2:8002\"\n  - \"n3:8002\"\n  router:\n    type: load_balancing\n    use_tokens: true\nhostname: \"n1\"\ninternal_request_auth_key: \"0123456789\"\nmax_retries: 3\nport: 0\n";

/// Pieces that mean something to YAML or to our readers.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            ":",
            ": ",
            "- ",
            "\n",
            "  ",
            "{",
            "}",
            "[",
            "]",
            "&a ",
            "*a",
            "&b [*a, *a]",
            "!!str ",
            "!!binary ",
            "\"",
            "'",
            "#",
            "|",
            ">-",
            "~",
            "null",
            "-1",
            "0",
            "1e400",
            ".nan",
            ".inf",
            "99999999999999999999999",
            "0x7fffffffffffffff",
            "0o777",
            "\t",
            "\u{0}",
            "\u{feff}",
            "\u{202e}",
            "é",
            "<<: *a\n",
            "? ",
            ",",
            "%YAML 1.2\n",
            "---\n",
            "...\n",
            "$(touch /tmp/pwned)",
            "`id`",
            "'; rm -rf /",
            "<placeholder>",
            "yes",
            "on",
        ])
        .prop_map(str::to_string),
        "\\PC{0,12}",
        "[a-z_]{1,12}: [0-9a-z]{0,6}\n",
    ]
}

/// `text` with each edit applied: at a position (a fraction of the length), delete some
/// characters, insert a piece.
fn mangle(text: &str, edits: &[(f64, usize, String)]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, delete, insert) in edits {
        let i = ((chars.len() as f64) * at) as usize;
        let i = i.min(chars.len());
        let end = (i + delete).min(chars.len());
        chars.splice(i..end, insert.chars());
    }
    chars.into_iter().collect()
}

fn edits() -> impl Strategy<Value = Vec<(f64, usize, String)>> {
    prop::collection::vec((0.0..1.0f64, 0usize..20, piece()), 1..8)
}

/// Read `text` with every reader; each answer, error included, must render.
fn read_all(text: &str) {
    let p = Path::new("hostile.yaml");
    let t0 = Instant::now();
    match TestConfig::parse(p, text) {
        Ok(c) => drop(format!("{} {:?}", c.name(), c.benchmark().concurrency)),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match ClusterFile::parse(p, text) {
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match CoordinatorConfig::parse(p, text) {
        Ok(c) => drop(format!("{:?}", c.generation.urls)),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "{:?} to read {} bytes",
        t0.elapsed(),
        text.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mangled_test_configs_get_an_answer(e in edits()) {
        read_all(&mangle(TEST_CONFIG, &e));
        read_all(&mangle(UPSTREAM, &e));
    }

    #[test]
    fn mangled_cluster_profiles_and_server_configs_get_an_answer(e in edits()) {
        read_all(&mangle(CLUSTERS, &e));
        read_all(&mangle(SERVER_CONFIG, &e));
    }

    #[test]
    fn arbitrary_text_gets_an_answer(text in "\\PC{0,400}") {
        read_all(&text);
    }
}

/// Aliases of aliases ("billion laughs"), deep nesting, one huge scalar, many keys: each is
/// refused or read within a second, never expanded into all of memory.
#[test]
fn documents_built_to_exhaust_memory_are_refused_quickly() {
    let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    laughs.push_str("metadata: {model_name: *a8}\n");
    let deep_seq = format!("metadata: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let deep_map = format!(
        "metadata: {}1{}\n",
        "{a: ".repeat(50_000),
        "}".repeat(50_000)
    );
    let huge_scalar = format!("metadata:\n  model_name: {}\n", "x".repeat(1 << 20));
    // Linear now; it was quadratic (a scan of the earlier keys per key): 20 000 keys took 5 s.
    let many_keys: String = (0..20_000).map(|i| format!("k{i}: {i}\n")).collect();
    for doc in [laughs, deep_seq, deep_map, huge_scalar, many_keys] {
        let t0 = Instant::now();
        let _ = TestConfig::parse(Path::new("bomb.yaml"), &doc);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{:?} for {}...",
            t0.elapsed(),
            &doc[..40]
        );
    }
    let err = TestConfig::parse(Path::new("bomb.yaml"), &{
        let mut d = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            d.push_str(&format!(
                "a{i}: &a{i} [{}]\n",
                vec![format!("*a{}", i - 1); 10].join(", ")
            ));
        }
        d
    })
    .unwrap_err();
    let shown = err
        .diagnostics()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(shown.contains("expands to more than"), "{shown}");
}
