//! Upstream test ids (`perf/test_perf_sanity.py::test_e2e[disagg_upload-<cfg>]`) and test lists.

use std::path::{Path, PathBuf};

use crate::ConfigError;
use crate::test_config::Mode;

/// A parsed test id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestId {
    /// The whole id as written.
    pub raw: String,
    /// `disagg`, `disagg_upload`, ...
    pub prefix: String,
    /// Mode from the id (era E: `disagg_upload-e2e-<cfg>`); `None` when the id has none.
    pub mode: Option<Mode>,
    /// The config's name (file stem).
    pub config_name: String,
}

/// The file of a config given as a path, or as an upstream test id (anything with `[` or
/// starting with `disagg` that is not an existing file) looked up under `config_dir`.
pub fn config_path(arg: &str, config_dir: &Path) -> Result<PathBuf, ConfigError> {
    let as_path = Path::new(arg);
    if as_path.exists() || !(arg.contains('[') || arg.starts_with("disagg")) {
        return Ok(as_path.to_path_buf());
    }
    TestId::parse(arg)?.resolve(config_dir)
}

impl TestId {
    /// Parse an id. Accepts the full pytest form or just the bracketed part.
    ///
    /// Rule (upstream): split the bracketed text on `-`; the first label is the prefix, which
    /// must contain `disagg`. If the second label is a mode (`e2e`, `gen_only`, ...) it is taken
    /// as such (era E); the config name is the rest, re-joined with `-`.
    pub fn parse(id: &str) -> Result<TestId, ConfigError> {
        let bad = |why: &str| ConfigError::TestId {
            id: id.to_string(),
            why: why.to_string(),
        };
        let raw = id.trim();
        let inner = match (raw.find('['), raw.rfind(']')) {
            (Some(a), Some(b)) if a < b => &raw[a + 1..b],
            (None, None) => raw,
            _ => return Err(bad("unbalanced brackets")),
        };
        let labels: Vec<&str> = inner.split('-').collect();
        let prefix = labels[0];
        if !prefix.contains("disagg") {
            return Err(bad(
                "the first label must be disagg or disagg_upload (aggregated tests are not disaggregated)",
            ));
        }
        let (mode, rest) = match labels.get(1).map(|l| (*l, Mode::parse(l))) {
            Some((_, Some(mode))) => (Some(mode), &labels[2..]),
            Some(("ctx_only", None)) => {
                return Err(bad(
                    "ctx_only tests are aggregated; disagg runs e2e and gen_only",
                ));
            }
            _ => (None, &labels[1..]),
        };
        let config_name = rest.join("-");
        if config_name.is_empty() {
            return Err(bad("no config name after the prefix"));
        }
        Ok(TestId {
            raw: raw.to_string(),
            prefix: prefix.to_string(),
            mode,
            config_name,
        })
    }

    /// Whether upstream would upload this test's results (`upload` in the prefix).
    pub fn uploads(&self) -> bool {
        self.prefix.contains("upload")
    }

    /// Find `<config_name>.yaml` (or `.yml`) anywhere under `dir`.
    pub fn resolve(&self, dir: &Path) -> Result<PathBuf, ConfigError> {
        let mut found = Vec::new();
        let wanted = [
            format!("{}.yaml", self.config_name),
            format!("{}.yml", self.config_name),
        ];
        find_files(dir, &wanted, &mut found, 0);
        found.sort();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(ConfigError::ConfigNotFound {
                name: self.config_name.clone(),
                dir: dir.to_path_buf(),
            }),
            _ => Err(ConfigError::AmbiguousConfig {
                name: self.config_name.clone(),
                candidates: found
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

fn find_files(dir: &Path, wanted: &[String], found: &mut Vec<PathBuf>, depth: usize) {
    if depth > 8 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            find_files(&path, wanted, found, depth + 1);
        } else if wanted
            .iter()
            .any(|w| entry.file_name().to_string_lossy() == **w)
        {
            found.push(path);
        }
    }
}

/// Read a test list: one id per line; blank lines and `#` comments skipped; anything after
/// the id on a line (upstream markers such as `TIMEOUT (120)`) ignored.
pub fn parse_test_list(text: &str) -> Result<Vec<TestId>, ConfigError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| TestId::parse(l.split_whitespace().next().unwrap_or(l)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn era_b_id_keeps_hyphens_in_the_name() {
        let id = TestId::parse(
            "perf/test_perf_sanity.py::test_e2e[disagg_upload-deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX]",
        )
        .unwrap();
        assert_eq!(id.mode, None);
        assert!(id.uploads());
        assert_eq!(
            id.config_name,
            "deepseek-r1-fp4_1k1k_ctx1_gen1_dep8_bs768_eplb0_mtp0_ccb-UCX"
        );
    }

    #[test]
    fn era_e_id_carries_the_mode() {
        let id = TestId::parse("test_e2e[disagg_upload-gen_only-gb200_x_ccb-NIXL]").unwrap();
        assert_eq!(id.mode, Some(Mode::GenOnly));
        assert_eq!(id.config_name, "gb200_x_ccb-NIXL");
        let id = TestId::parse("disagg-e2e-b200_y").unwrap();
        assert_eq!((id.mode, id.uploads()), (Some(Mode::E2e), false));
    }

    #[test]
    fn rejects_aggregated_and_empty_ids() {
        assert!(TestId::parse("test_e2e[aggr_upload-x]").is_err());
        assert!(TestId::parse("test_e2e[disagg_upload]").is_err());
        assert!(TestId::parse("test_e2e[disagg-ctx_only-x]").is_err());
    }

    #[test]
    fn test_lists_skip_comments_and_markers() {
        let ids = parse_test_list("# list\n\nx.py::test_e2e[disagg-a_b] TIMEOUT (120)\n").unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].config_name, "a_b");
    }
}
