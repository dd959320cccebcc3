//! The shell snippets of `README.md` and `docs/**/*.md`.
//!
//! Every ```` ```sh ```` (`bash`, `shell`, `console`) block is read, and every `disagg` command
//! in it must name subcommands and flags that exist (`shell::check`), whether it runs or not.
//!
//! A block is also run when the line right before its opening fence is `<!-- runnable -->`
//! (`<!-- runnable timeout=300 -->` for a longer bound than 120 s); it must then be a `sh` or
//! `bash` block. It runs under `bash -euo pipefail` in a fresh temporary directory holding a
//! copy of the repository's `examples/`, with:
//! - `disagg` on `PATH` the binary under test;
//! - `$REPO` the repository root (read it, do not write into it);
//! - `HOME`, `XDG_CONFIG_HOME`, `XDG_DATA_HOME`, `XDG_CACHE_HOME` fresh directories under the
//!   temporary one (so the results store and cluster profiles start empty), every `DISAGG_*`
//!   variable unset, `NO_COLOR=1`, stdin empty.
//!
//! A block that exits non-zero or outlives its bound (its process group then gets SIGTERM,
//! 10 s, SIGKILL) fails the test with its file:line, its exit status and the tail of its output.
//! Whatever a block leaves running in its process group is killed when it ends.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{command, repo_root, shell};

/// How long a runnable block may take unless its marker says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a block gets between SIGTERM and SIGKILL when it outlives its bound.
const GRACE: Duration = Duration::from_secs(10);
/// Lines of output a failure shows.
const TAIL_LINES: usize = 40;

/// A fenced code block of a markdown file.
#[derive(Debug)]
struct Block {
    /// `README.md`, `docs/cli/README.md`.
    file: String,
    /// The line of the opening fence (1-based).
    line: usize,
    /// The first word of the info string: `sh`, `text`, ...
    lang: String,
    /// Each line of the block with its line number.
    lines: Vec<(usize, String)>,
    /// The bound of a block marked `<!-- runnable -->`; `None` when it is not marked.
    runnable: Option<Duration>,
}

impl Block {
    /// A shell block: its lines are commands (after `$ ` in a `console` block).
    fn is_shell(&self) -> bool {
        matches!(self.lang.as_str(), "sh" | "bash" | "shell" | "console")
    }

    /// Its command lines, continuation lines joined, each with the number of its first line.
    fn commands(&self) -> Vec<(usize, String)> {
        let mut out: Vec<(usize, String)> = Vec::new();
        let mut continued = false;
        for (n, line) in &self.lines {
            let line = if self.lang == "console" && !continued {
                match line.trim_start().strip_prefix("$ ") {
                    Some(cmd) => cmd,
                    None => continue,
                }
            } else {
                line.as_str()
            };
            let (text, continues) = match line.trim_end().strip_suffix('\\') {
                Some(head) => (head, true),
                None => (line, false),
            };
            match out.last_mut() {
                Some((_, joined)) if continued => {
                    joined.push(' ');
                    joined.push_str(text);
                }
                _ => out.push((*n, text.to_string())),
            }
            continued = continues;
        }
        out
    }
}

/// `<!-- runnable -->` or `<!-- runnable timeout=SECONDS -->`: `None` when `line` is not a
/// marker, an error when it is a malformed one.
fn marker(line: &str) -> Option<Result<Duration, String>> {
    let inner = line
        .trim()
        .strip_prefix("<!--")?
        .strip_suffix("-->")?
        .trim();
    let mut words = inner.split_whitespace();
    if words.next() != Some("runnable") {
        return None;
    }
    let mut timeout = DEFAULT_TIMEOUT;
    for word in words {
        match word
            .strip_prefix("timeout=")
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(s) => timeout = Duration::from_secs(s),
            None => {
                return Some(Err(format!(
                    "`{word}` in a runnable marker: the only option is timeout=SECONDS"
                )));
            }
        }
    }
    Some(Ok(timeout))
}

/// The fenced blocks of one markdown file (`name` is its path from the repository root), and
/// every misplaced or malformed runnable marker.
fn blocks(name: &str, text: &str) -> (Vec<Block>, Vec<String>) {
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let mut open: Option<(String, Block)> = None;
    let mut previous: Option<Result<Duration, String>> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_start();
        if let Some((fence, block)) = open.as_mut() {
            let t = trimmed.trim_end();
            if t.len() >= fence.len() && t.chars().all(|c| fence.starts_with(c)) {
                blocks.extend(open.take().map(|(_, b)| b));
            } else {
                block.lines.push((n, line.to_string()));
            }
            continue;
        }
        let fence_char = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let fence_len = fence_char.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        let marked = previous.take();
        if fence_len >= 3 {
            let fence: String = trimmed.chars().take(fence_len).collect();
            let lang = trimmed[fence_len..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string();
            let runnable = match marked {
                Some(Ok(timeout)) if matches!(lang.as_str(), "sh" | "bash") => Some(timeout),
                Some(Ok(_)) => {
                    problems.push(format!(
                        "{name}:{n}: a runnable block must be ```sh or ```bash, not ```{lang}"
                    ));
                    None
                }
                Some(Err(e)) => {
                    problems.push(format!("{name}:{}: {e}", n - 1));
                    None
                }
                None => None,
            };
            open = Some((
                fence,
                Block {
                    file: name.to_string(),
                    line: n,
                    lang,
                    lines: Vec::new(),
                    runnable,
                },
            ));
            continue;
        }
        if marked.is_some() {
            problems.push(format!(
                "{name}:{}: `<!-- runnable -->` must be the line right before a ```sh fence",
                n - 1
            ));
        }
        previous = marker(line);
    }
    if let Some((_, block)) = open {
        problems.push(format!("{name}:{}: this block is never closed", block.line));
    }
    if previous.is_some() {
        problems.push(format!(
            "{name}: `<!-- runnable -->` on the last line, with no block after it"
        ));
    }
    (blocks, problems)
}

/// `README.md` and every `*.md` under `docs/`, as paths from the repository root, sorted.
fn markdown_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = vec!["README.md".to_string()];
    walk(&root.join("docs"), root, &mut out);
    out.sort();
    out
}

/// Every block of every documentation file, and every marker problem.
fn all_blocks() -> (Vec<Block>, Vec<String>) {
    let root = repo_root();
    let mut all = Vec::new();
    let mut problems = Vec::new();
    for name in markdown_files(&root) {
        let text =
            std::fs::read_to_string(root.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (b, p) = blocks(&name, &text);
        all.extend(b);
        problems.extend(p);
    }
    (all, problems)
}

#[test]
fn every_disagg_command_in_the_docs_exists() {
    let root = command();
    let (blocks, mut problems) = all_blocks();
    for block in blocks.iter().filter(|b| b.is_shell()) {
        for (n, line) in block.commands() {
            for args in shell::invocations(&line) {
                for p in shell::check(&root, &args) {
                    problems.push(format!("{}:{n}: {p}\n    {}", block.file, line.trim()));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the docs name commands or flags that `disagg` does not have (see `disagg ... --help`, docs/cli/):\n{}",
        problems.join("\n")
    );
}

/// `kill -SIGNAL -- -GROUP`, ignoring a group that is already gone.
fn signal_group(group: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
}

/// Copy the directory `from` to `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        }
    }
}

/// How a block ended.
enum Ending {
    Exited(ExitStatus),
    TimedOut(Duration),
}

/// Run one runnable block (see the module docs); `Err` says how it failed.
fn run(block: &Block, timeout: Duration) -> Result<(), String> {
    let repo = repo_root();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = |name: &str| -> PathBuf {
        let d = tmp.path().join(name);
        std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        d
    };
    let (work, bin, home) = (dir("work"), dir("bin"), dir("home"));
    copy_dir(&repo.join("examples"), &work.join("examples"));
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_disagg"), bin.join("disagg"))
        .expect("symlink the binary");
    let script = tmp.path().join("snippet.sh");
    let body: String = block.lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    std::fs::write(&script, &body).expect("write the snippet");
    let log_path = tmp.path().join("output.log");
    let log = std::fs::File::create(&log_path).expect("create the output log");
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("PATH");

    let mut cmd = Command::new("bash");
    cmd.args(["-euo", "pipefail"])
        .arg(&script)
        .current_dir(&work)
        .env("PATH", path)
        .env("REPO", &repo)
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the output log"))
        .stderr(log);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DISAGG_") {
            cmd.env_remove(name);
        }
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("start bash");
    let group = child.id();
    let started = Instant::now();
    let ending = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Ending::Exited(status);
        }
        if started.elapsed() > timeout {
            signal_group(group, "TERM");
            let deadline = Instant::now() + GRACE;
            while Instant::now() < deadline && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            signal_group(group, "KILL");
            let _ = child.wait();
            break Ending::TimedOut(timeout);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // What the block started in the background and left running.
    signal_group(group, "KILL");

    let how = match ending {
        Ending::Exited(status) if status.success() => return Ok(()),
        Ending::Exited(status) => format!("failed ({status})"),
        Ending::TimedOut(t) => format!("did not end within {} s", t.as_secs()),
    };
    let output = std::fs::read_to_string(&log_path).unwrap_or_default();
    let lines: Vec<&str> = output.lines().collect();
    Err(format!(
        "{}:{}: the runnable block {how}\n--- the block ---\n{body}--- its output (last {TAIL_LINES} lines) ---\n{}",
        block.file,
        block.line,
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    ))
}

#[test]
fn runnable_snippets_succeed() {
    let (blocks, problems) = all_blocks();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let failures: Vec<String> = blocks
        .iter()
        .filter_map(|b| Some((b, b.runnable?)))
        .filter_map(|(b, timeout)| {
            eprintln!("running {}:{}", b.file, b.line);
            run(b, timeout).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} runnable doc block(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# T\n\n<!-- runnable -->\n```sh\ndisagg run x \\\n  --out y\n```\n\n```text\nout\n```\n\n<!-- runnable timeout=5 -->\n````bash\necho ```\n````\n";

    #[test]
    fn blocks_carry_their_line_language_and_marker() {
        let (b, problems) = blocks("d.md", DOC);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].line, b[0].lang.as_str()), (4, "sh"));
        assert_eq!(b[0].runnable, Some(DEFAULT_TIMEOUT));
        assert_eq!(
            b[0].commands(),
            [(5, "disagg run x    --out y".to_string())]
        );
        assert_eq!((b[1].lang.as_str(), b[1].runnable), ("text", None));
        assert_eq!(b[2].runnable, Some(Duration::from_secs(5)));
        assert_eq!(b[2].lines, [(15, "echo ```".to_string())]);
    }

    #[test]
    fn a_misplaced_or_malformed_marker_is_an_error() {
        let (_, p) = blocks("d.md", "<!-- runnable -->\n\n```sh\nls\n```\n");
        assert_eq!(
            p,
            ["d.md:1: `<!-- runnable -->` must be the line right before a ```sh fence"]
        );
        let (_, p) = blocks("d.md", "<!-- runnable -->\n```text\nls\n```\n");
        assert_eq!(
            p,
            ["d.md:2: a runnable block must be ```sh or ```bash, not ```text"]
        );
        let (_, p) = blocks("d.md", "<!-- runnable slow -->\n```sh\nls\n```\n");
        assert_eq!(
            p,
            ["d.md:1: `slow` in a runnable marker: the only option is timeout=SECONDS"]
        );
    }

    #[test]
    fn console_blocks_check_only_the_prompt_lines() {
        let (b, _) = blocks("d.md", "```console\n$ disagg validate x\nvalid: x\n```\n");
        assert_eq!(b[0].commands(), [(2, "disagg validate x".to_string())]);
    }
}
