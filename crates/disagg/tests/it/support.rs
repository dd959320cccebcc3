//! What the CLI tests share: the repository root, `disagg` started as a service that never
//! outlives its test, the requests every router in front of a prefill/decode pair must answer
//! (ours and the peers of `scripts/real-engines.sh`), and the log files of the processes they
//! start.

#![expect(
    clippy::unwrap_used,
    reason = "helpers outside #[test] functions fail the test by panicking"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use disagg_test_support::{ChildGuard, spawn_listening};

/// Start `disagg ARGS...` and return it with its first stdout line and the `http://host:port`
/// that line names.
pub fn spawn_disagg(args: &[&str]) -> (ChildGuard, String, String) {
    spawn_listening(Command::new(env!("CARGO_BIN_EXE_disagg")).args(args))
}

/// The repository root: where the examples, fixtures and scripts are, and the working directory of
/// the tests that name them by relative path.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `GET path` of `addr` over HTTP/1.0: the whole response, or `None` while nothing answers.
pub fn get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// `path`, opened to append to, so stdout and stderr both go there without overwriting each
/// other.
pub fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// The last lines of a log file, for a failure message.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// What a router answered to one request: the generated text and the completion tokens the
/// engine counted.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub text: String,
    pub tokens: u64,
}

/// POST `body` to `url`; the status and the body.
fn post(url: &str, body: &serde_json::Value) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

/// The three requests, each sent to the router at `base`: a completion, the same streamed with
/// `include_usage` (it must end in `data: [DONE]`), a chat completion; greedy, `ignore_eos`,
/// `max_tokens` tokens of `model`. Every answer must be a 200 with `usage`.
pub fn ask(base: &str, model: &str, max_tokens: u64) -> Vec<Answer> {
    let prompt = "A prefill server computes the prompt, and the decode server continues from \
                  the KV cache it receives";
    let common = serde_json::json!({
        "model": model, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true
    });
    let with = |extra: serde_json::Value| {
        let mut b = common.clone();
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let completions = format!("{base}/v1/completions");
    let (status, body) = post(&completions, &with(serde_json::json!({"prompt": prompt})));
    assert_eq!(status, 200, "{base}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let plain = Answer {
        text: v["choices"][0]["text"].as_str().unwrap().to_string(),
        tokens: v["usage"]["completion_tokens"].as_u64().unwrap(),
    };

    let (status, body) = post(
        &completions,
        &with(serde_json::json!({
            "prompt": prompt, "stream": true, "stream_options": {"include_usage": true}
        })),
    );
    assert_eq!(status, 200, "{base}: {body}");
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{base}: {body}");
    let chunks: Vec<serde_json::Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|e2| panic!("{base}: {e2}: {e}")))
        .collect();
    let streamed = Answer {
        text: chunks
            .iter()
            .filter_map(|c| c["choices"][0]["text"].as_str())
            .collect(),
        tokens: chunks
            .iter()
            .find_map(|c| c["usage"]["completion_tokens"].as_u64())
            .unwrap_or_else(|| panic!("{base}: no usage chunk: {body}")),
    };

    let (status, body) = post(
        &format!("{base}/v1/chat/completions"),
        &with(serde_json::json!({"messages": [{"role": "user", "content": prompt}]})),
    );
    assert_eq!(status, 200, "{base}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let chat = Answer {
        text: v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string(),
        tokens: v["usage"]["completion_tokens"].as_u64().unwrap(),
    };
    vec![plain, streamed, chat]
}
