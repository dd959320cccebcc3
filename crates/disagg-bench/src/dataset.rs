//! What the requests ask for.
//!
//! - `random`: prompts of token ids, vLLM-style — lengths uniform in `[floor(L·(1−r)),
//!   ceil(L·(1+r))]` (outputs at least 1), ids a run `(offset + i + j) mod vocab` from a random
//!   offset — sent as token-id arrays, so no tokenizer is needed and the server sees exactly ISL
//!   tokens;
//! - `jsonl`: one JSON object per line, `{"prompt": "text" | [ids], "output_len": N}` (`output_len`
//!   optional, else `--osl`);
//! - `trtllm-custom`: TensorRT-LLM's `trtllm_custom` format, one JSON object per line with the
//!   prompt at `input.messages[1].content` and the output length at `input.max_tokens`; the lines
//!   are shuffled by the seed, as upstream shuffles them (our order, not Python's);
//! - `shared-prefix`: groups of prompts sharing a prefix ([`shared_prefix_requests`]);
//! - `multi-turn`: chat sessions whose turns repeat the conversation so far
//!   ([`multi_turn_requests`]);
//! - `mooncake`: a Mooncake trace replayed on its timestamps ([`crate::trace`]).

use std::path::Path;

use crate::arrival::Rng;

/// A prompt as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    /// Token ids (exact length).
    Ids(Vec<u32>),
    /// Text (its length in tokens is the server's business; usage tells).
    Text(String),
}

impl PromptInput {
    /// Length in tokens when known.
    pub fn token_len(&self) -> Option<u32> {
        match self {
            PromptInput::Ids(ids) => Some(ids.len() as u32),
            PromptInput::Text(_) => None,
        }
    }
}

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The prompt.
    pub prompt: PromptInput,
    /// Prompt length in tokens, when known (ids, or text measured by a tokenizer).
    pub prompt_tokens: Option<u32>,
    /// Output tokens to ask for.
    pub output_tokens: u32,
    /// The multi-turn session it is a turn of: a session's turns go in order, one after the
    /// other, on one client slot.
    pub session: Option<u32>,
}

/// The prompt tokenizer of a Hugging Face model (its directory, or its `tokenizer.json`): the
/// tokenizer for completions (special tokens added, as `tokenizer(prompt)`) and its chat template
/// for chat (rendered, then tokenized without special tokens, as `apply_chat_template(...,
/// tokenize=True)`); what a router uses to make the ids the engine makes.
pub fn prompt_tokenizer(
    path: &Path,
) -> Result<disagg_protocol::prompt::PromptTokenizer, DatasetError> {
    use std::sync::Arc;
    let tok = Arc::new(Tokenizer::load(path)?);
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let template = crate::chat_template::ChatTemplate::load(dir)?;
    let text = {
        let tok = Arc::clone(&tok);
        Arc::new(move |s: &str| tok.encode_prompt(s)) as Arc<disagg_protocol::prompt::TokenizeFn>
    };
    let chat = template.map(|tpl| {
        Arc::new(move |m: &[disagg_protocol::ChatMessage]| tpl.render(m).map(|s| tok.encode(&s)))
            as Arc<disagg_protocol::prompt::ChatFn>
    });
    Ok(disagg_protocol::prompt::PromptTokenizer::Model { text, chat })
}

/// A Hugging Face `tokenizer.json`, for text prompts of exact length and client-side counts.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Load `dir/tokenizer.json`, or the file itself.
    pub fn load(path: &Path) -> Result<Tokenizer, DatasetError> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let name = file.display().to_string();
        if !file.exists() {
            return Err(DatasetError::Tokenizer {
                path: name,
                why: "no such file (give a directory holding tokenizer.json, or the file)".into(),
            });
        }
        let inner =
            tokenizers::Tokenizer::from_file(&file).map_err(|e| DatasetError::Tokenizer {
                path: name,
                why: e.to_string(),
            })?;
        Ok(Tokenizer { inner })
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// Token ids of `text` with the special tokens the model's tokenizer adds (a BOS), as an
    /// engine tokenizes a prompt (`tokenizer(prompt)["input_ids"]`).
    pub fn encode_prompt(&self, text: &str) -> Vec<u32> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .unwrap_or_default()
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, false).unwrap_or_default()
    }

    /// Ids of the base vocabulary (added/special tokens excluded).
    pub fn base_vocab(&self) -> u32 {
        self.inner.get_vocab_size(false) as u32
    }
}

/// Fill in the length of text prompts that have none, with the tokenizer (the dataset length
/// upstream counts as input tokens).
pub fn measure(requests: &mut [Request], tok: &Tokenizer) {
    for r in requests.iter_mut().filter(|r| r.prompt_tokens.is_none()) {
        if let PromptInput::Text(t) = &r.prompt {
            r.prompt_tokens = Some(tok.encode(t).len() as u32);
        }
    }
}

/// Random text prompts of exact length, as vLLM builds them: a run of token ids is decoded, the
/// text re-encoded, and the ids cut or extended until decode → encode gives `isl` tokens (at
/// most ten rounds; the last length is what is recorded).
pub fn random_text_requests(
    n: usize,
    isl: u32,
    osl: u32,
    r: f64,
    tok: &Tokenizer,
    seed: u64,
) -> Vec<Request> {
    let vocab = tok.base_vocab().max(1);
    let mut rng = Rng::new(seed ^ 0x7e47);
    random_requests(n, isl, osl, r, vocab, seed)
        .into_iter()
        .map(|req| {
            let PromptInput::Ids(mut ids) = req.prompt else {
                unreachable!("random requests are token ids")
            };
            let target = ids.len();
            let mut text = tok.decode(&ids);
            let mut len = tok.encode(&text).len();
            for _ in 0..10 {
                if len == target {
                    break;
                }
                let re = tok.encode(&text);
                ids = if re.len() > target {
                    re[..target].to_vec()
                } else {
                    let mut more = re;
                    while more.len() < target {
                        more.push((rng.next_u64() % u64::from(vocab)) as u32);
                    }
                    more
                };
                text = tok.decode(&ids);
                len = tok.encode(&text).len();
            }
            Request {
                prompt: PromptInput::Text(text),
                prompt_tokens: Some(len as u32),
                output_tokens: req.output_tokens,
                session: None,
            }
        })
        .collect()
}

/// `n` random requests around `isl`/`osl` with range ratio `r` (0 ≤ r < 1).
pub fn random_requests(
    n: usize,
    isl: u32,
    osl: u32,
    r: f64,
    vocab: u32,
    seed: u64,
) -> Vec<Request> {
    let mut rng = Rng::new(seed);
    let bounds = |len: u32, min: u64| {
        let lo = ((f64::from(len) * (1.0 - r)).floor() as u64).max(min);
        let hi = ((f64::from(len) * (1.0 + r)).ceil() as u64).max(lo);
        (lo, hi)
    };
    let (ilo, ihi) = bounds(isl, 1);
    let (olo, ohi) = bounds(osl, 1);
    (0..n)
        .map(|i| {
            let len = rng.range(ilo, ihi);
            let out = rng.range(olo, ohi) as u32;
            let offset = rng.next_u64() % u64::from(vocab);
            let prompt: Vec<u32> = (0..len)
                .map(|j| ((offset + i as u64 + j) % u64::from(vocab)) as u32)
                .collect();
            Request {
                prompt_tokens: Some(prompt.len() as u32),
                prompt: PromptInput::Ids(prompt),
                output_tokens: out,
                session: None,
            }
        })
        .collect()
}

/// Token `j` of a block identified by `key`: reproducible ids in `0..vocab` (blocks with the
/// same key are the same tokens, whatever the request).
fn block_token(seed: u64, key: u64, j: u64, vocab: u32) -> u32 {
    let mut rng = Rng::new(seed ^ key.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ j.rotate_left(32));
    (rng.next_u64() % u64::from(vocab.max(1))) as u32
}

/// `len` ids of the block `key`.
pub(crate) fn block(seed: u64, key: u64, len: u32, vocab: u32) -> Vec<u32> {
    (0..u64::from(len))
        .map(|j| block_token(seed, key, j, vocab))
        .collect()
}

/// Keys of the blocks of each kind, apart so that no two kinds share ids by chance.
const PREFIX_KEY: u64 = 1 << 60;
const OWN_KEY: u64 = 2 << 60;
const ANSWER_KEY: u64 = 3 << 60;

/// Shared-prefix prompts (vLLM's prefix repetition, aiperf's prefix synthesis): `groups`
/// prefixes of `prefix_len` ids; request `i` is prefix `i mod groups` followed by `suffix_len`
/// ids of its own, asking for `osl` tokens; the order is shuffled by the seed. So every group's
/// prefix comes `n / groups` times and all but its first could be served from a cache.
pub fn shared_prefix_requests(
    n: usize,
    groups: u32,
    prefix_len: u32,
    suffix_len: u32,
    osl: u32,
    vocab: u32,
    seed: u64,
) -> Vec<Request> {
    let groups = groups.max(1);
    let mut out: Vec<Request> = (0..n)
        .map(|i| {
            let g = i as u64 % u64::from(groups);
            let mut prompt = block(seed, PREFIX_KEY + g, prefix_len, vocab);
            prompt.extend(block(seed, OWN_KEY + i as u64, suffix_len, vocab));
            Request {
                prompt_tokens: Some(prompt.len() as u32),
                prompt: PromptInput::Ids(prompt),
                output_tokens: osl.max(1),
                session: None,
            }
        })
        .collect();
    // Fisher–Yates with the run's generator.
    let mut rng = Rng::new(seed ^ 0x5a5a_0f0f);
    for i in (1..out.len()).rev() {
        let j = rng.range(0, i as u64) as usize;
        out.swap(i, j);
    }
    out
}

/// Multi-turn chat sessions: `sessions` conversations of `turns` turns. A session's first prompt
/// is `first_len` ids of its own; each later turn's prompt is the previous prompt, then the
/// previous answer (`osl` ids standing for it), then `turn_len` new ids — so each turn repeats
/// the whole previous prompt as its prefix. Session-major order; [`Request::session`] tells the
/// load generator to keep a session's turns in order on one client slot.
pub fn multi_turn_requests(
    sessions: u32,
    turns: u32,
    first_len: u32,
    turn_len: u32,
    osl: u32,
    vocab: u32,
    seed: u64,
) -> Vec<Request> {
    let mut out = Vec::new();
    for s in 0..sessions {
        let key = u64::from(s) << 20;
        let mut prompt = block(seed, OWN_KEY + key, first_len, vocab);
        for t in 0..turns.max(1) {
            if t > 0 {
                let turn = key + u64::from(t);
                prompt.extend(block(seed, ANSWER_KEY + turn, osl, vocab));
                prompt.extend(block(seed, OWN_KEY + turn, turn_len, vocab));
            }
            out.push(Request {
                prompt_tokens: Some(prompt.len() as u32),
                prompt: PromptInput::Ids(prompt.clone()),
                output_tokens: osl.max(1),
                session: Some(s),
            });
        }
    }
    out
}

/// Why a dataset file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file cannot be read.
    #[error("cannot read the dataset {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a usable request.
    #[error(
        "{path}:{line}: {why}; each line must be {{\"prompt\": \"text\" or [token ids], \"output_len\": N}}"
    )]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// A line of a Mooncake trace is not a usable request.
    #[error(
        "{path}:{line}: {why}; each line of a Mooncake trace must be {{\"timestamp\": ms, \"input_length\": N, \"output_length\": N, \"hash_ids\": [block ids]}}"
    )]
    TraceLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// No request in the file.
    #[error("{0}: the dataset has no requests")]
    Empty(String),
    /// The tokenizer cannot be loaded.
    #[error("cannot load the tokenizer {path}: {why}")]
    Tokenizer {
        /// The file.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// Read a file of one JSON object per line, turning each into a request with `parse`, which
/// reports what is wrong with a line as text; errors name the file and the line.
pub(crate) fn read_json_lines<T>(
    path: &Path,
    parse: impl Fn(&serde_json::Value) -> Result<T, String>,
) -> Result<Vec<T>, DatasetError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| DatasetError::Read {
        path: name.clone(),
        source,
    })?;
    let mut out = Vec::new();
    // Line by line, so that a byte that is not UTF-8 is reported with its line.
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let bad = |why: String| DatasetError::Line {
            path: name.clone(),
            line: i + 1,
            why,
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = std::str::from_utf8(line).map_err(|e| {
            bad(format!(
                "not UTF-8 (an invalid byte at column {})",
                e.valid_up_to() + 1
            ))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON ({e})")))?;
        out.push(parse(&v).map_err(bad)?);
    }
    if out.is_empty() {
        return Err(DatasetError::Empty(name));
    }
    Ok(out)
}

pub(crate) fn positive(v: &serde_json::Value) -> Option<u32> {
    v.as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
}

/// Read a JSONL dataset; `default_osl` is used where a line has no `output_len`.
pub fn load_jsonl(path: &Path, default_osl: u32) -> Result<Vec<Request>, DatasetError> {
    read_json_lines(path, |v| {
        let prompt = match &v["prompt"] {
            serde_json::Value::String(s) if !s.is_empty() => PromptInput::Text(s.clone()),
            serde_json::Value::Array(ids) if !ids.is_empty() => PromptInput::Ids(
                ids.iter()
                    .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or("prompt ids must be non-negative integers")?,
            ),
            _ => return Err("no non-empty `prompt`".to_string()),
        };
        let output_tokens = match &v["output_len"] {
            serde_json::Value::Null => default_osl,
            n => positive(n)
                .ok_or_else(|| format!("output_len must be a positive integer, got {n}"))?,
        };
        Ok(Request {
            prompt_tokens: prompt.token_len(),
            prompt,
            output_tokens,
            session: None,
        })
    })
}

/// Read a `trtllm_custom` dataset (see the module docs), shuffled by `seed`.
pub fn load_trtllm_custom(path: &Path, seed: u64) -> Result<Vec<Request>, DatasetError> {
    let mut out = read_json_lines(path, |v| {
        let prompt = v["input"]["messages"][1]["content"]
            .as_str()
            .filter(|p| !p.is_empty())
            .ok_or("no text at input.messages[1].content")?;
        let max_tokens = positive(&v["input"]["max_tokens"])
            .ok_or("input.max_tokens must be a positive integer")?;
        Ok(Request {
            prompt: PromptInput::Text(prompt.to_string()),
            prompt_tokens: None,
            output_tokens: max_tokens,
            session: None,
        })
    })?;
    // Fisher–Yates with the run's seed.
    let mut rng = Rng::new(seed ^ 0x0da7_a5e7);
    for i in (1..out.len()).rev() {
        out.swap(i, rng.range(0, i as u64) as usize);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(r: &Request) -> &[u32] {
        match &r.prompt {
            PromptInput::Ids(ids) => ids,
            PromptInput::Text(_) => panic!("ids expected"),
        }
    }

    #[test]
    fn shared_prefix_requests_share_exactly_their_groups_prefix() {
        let reqs = shared_prefix_requests(64, 16, 2048, 128, 32, 32_000, 7);
        assert_eq!(reqs.len(), 64);
        assert!(
            reqs.iter()
                .all(|r| r.prompt_tokens == Some(2176) && r.output_tokens == 32)
        );
        let mut prefixes: Vec<&[u32]> = reqs.iter().map(|r| &ids(r)[..2048]).collect();
        prefixes.sort();
        prefixes.dedup();
        assert_eq!(prefixes.len(), 16, "16 distinct prefixes");
        for p in &prefixes {
            let users = reqs.iter().filter(|r| &ids(r)[..2048] == *p).count();
            assert_eq!(users, 4, "each prefix 64 / 16 times");
        }
        let mut suffixes: Vec<&[u32]> = reqs.iter().map(|r| &ids(r)[2048..]).collect();
        suffixes.sort();
        suffixes.dedup();
        assert_eq!(suffixes.len(), 64, "every suffix its own");
        // Two groups' prefixes differ from the first token on (no accidental shared blocks).
        assert!(prefixes.windows(2).all(|w| w[0][..32] != w[1][..32]));
        assert_eq!(
            reqs,
            shared_prefix_requests(64, 16, 2048, 128, 32, 32_000, 7)
        );
        assert_ne!(
            reqs.iter().map(|r| ids(r)[0]).collect::<Vec<_>>(),
            (0..64).map(|i| ids(&reqs[i % 16])[0]).collect::<Vec<_>>(),
            "shuffled, not in group order"
        );
    }

    #[test]
    fn multi_turn_turns_extend_the_previous_prompt() {
        let reqs = multi_turn_requests(3, 4, 100, 20, 10, 32_000, 1);
        assert_eq!(reqs.len(), 12);
        for s in 0..3u32 {
            let turns: Vec<&Request> = reqs.iter().filter(|r| r.session == Some(s)).collect();
            assert_eq!(turns.len(), 4);
            let lens: Vec<u32> = turns.iter().map(|r| r.prompt_tokens.unwrap()).collect();
            assert_eq!(
                lens,
                [100, 130, 160, 190],
                "previous + answer (10) + user (20)"
            );
            for w in turns.windows(2) {
                assert_eq!(
                    &ids(w[1])[..ids(w[0]).len()],
                    ids(w[0]),
                    "the whole previous prompt"
                );
            }
        }
        assert_ne!(
            ids(&reqs[0])[..100],
            ids(&reqs[4])[..100],
            "sessions share nothing"
        );
    }

    #[test]
    fn random_requests_are_reproducible_and_in_range() {
        let a = random_requests(100, 1000, 100, 0.5, 32_000, 3);
        assert_eq!(a, random_requests(100, 1000, 100, 0.5, 32_000, 3));
        assert!(
            a.iter()
                .all(|r| (500..=1500).contains(&r.prompt.token_len().unwrap()))
        );
        assert!(a.iter().all(|r| (50..=150).contains(&r.output_tokens)));
        let exact = random_requests(10, 64, 8, 0.0, 32_000, 3);
        assert!(
            exact
                .iter()
                .all(|r| r.prompt.token_len() == Some(64) && r.output_tokens == 8)
        );
        let PromptInput::Ids(ids) = &exact[0].prompt else {
            panic!("random prompts are token ids")
        };
        assert!(ids.windows(2).all(|w| (w[0] + 1) % 32_000 == w[1]));
    }

    #[test]
    fn trtllm_custom_lines_are_read_and_shuffled_by_the_seed() {
        let dir = std::env::temp_dir().join(format!("disagg-tc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.json");
        let line = |k: u32| {
            format!(
                "{{\"input\": {{\"messages\": [{{\"role\": \"system\", \"content\": \"s\"}}, {{\"role\": \"user\", \"content\": \"q{k}\"}}], \"max_tokens\": {k}}}}}\n"
            )
        };
        std::fs::write(&p, (1..=20).map(line).collect::<String>()).unwrap();
        let a = load_trtllm_custom(&p, 1).unwrap();
        assert_eq!(a.len(), 20);
        assert_eq!(
            a,
            load_trtllm_custom(&p, 1).unwrap(),
            "same seed, same order"
        );
        assert_ne!(
            a,
            load_trtllm_custom(&p, 2).unwrap(),
            "another seed, another order"
        );
        let mut lens: Vec<u32> = a.iter().map(|r| r.output_tokens).collect();
        lens.sort_unstable();
        assert_eq!(lens, (1..=20).collect::<Vec<u32>>());
        assert!(
            a.iter()
                .all(|r| r.prompt == PromptInput::Text(format!("q{}", r.output_tokens)))
        );
        std::fs::write(&p, "{\"input\": {\"messages\": [], \"max_tokens\": 3}}\n").unwrap();
        let e = load_trtllm_custom(&p, 1).unwrap_err().to_string();
        assert!(
            e.contains("c.json:1: no text at input.messages[1].content"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn jsonl_lines_with_text_ids_and_lengths() {
        let dir = std::env::temp_dir().join(format!("disagg-ds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("d.jsonl");
        std::fs::write(
            &p,
            "{\"prompt\": \"hello there\"}\n\n{\"prompt\": [1, 2, 3], \"output_len\": 7}\n",
        )
        .unwrap();
        let r = load_jsonl(&p, 16).unwrap();
        assert_eq!(
            r[0],
            Request {
                prompt: PromptInput::Text("hello there".into()),
                prompt_tokens: None,
                output_tokens: 16,
                session: None,
            }
        );
        assert_eq!(
            r[1],
            Request {
                prompt: PromptInput::Ids(vec![1, 2, 3]),
                prompt_tokens: Some(3),
                output_tokens: 7,
                session: None,
            }
        );
        std::fs::write(&p, "{\"prompt\": \"ok\"}\n{\"output_len\": 3}\n").unwrap();
        let e = load_jsonl(&p, 16).unwrap_err().to_string();
        assert!(e.contains("d.jsonl:2: no non-empty `prompt`"), "{e}");
        std::fs::write(&p, "\n").unwrap();
        assert!(matches!(load_jsonl(&p, 16), Err(DatasetError::Empty(_))));
        assert!(matches!(
            load_jsonl(&dir.join("missing"), 16),
            Err(DatasetError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
