//! Deterministic tokens and text.
//!
//! The simulator's tokenizer is a word splitter: each whitespace-separated word is one token,
//! its id a hash of the word. Generated token ids are a hash of (seed, prompt, position), so the
//! same prompt yields the same output on an aggregated server and through a context/generation
//! pair. Text is decoded from a small built-in vocabulary; each generated token is one word
//! with a leading space.

/// Token ids are below this.
pub const VOCAB_SIZE: u32 = disagg_protocol::prompt::WORD_VOCAB;

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "model",
    "token",
    "cache",
    "batch",
    "prefill",
    "decode",
    "server",
    "request",
    "stream",
    "latency",
    "through",
    "put",
    "node",
    "GPU",
    "tensor",
    "layer",
    "expert",
    "router",
    "context",
    "generation",
];

/// FNV-1a over bytes, then a SplitMix64 finaliser.
fn mix(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn finish(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Tokenize text: one token per whitespace-separated word (the router tokenizes with the same
/// function, so its block hashes match this server's).
pub fn tokenize(text: &str) -> Vec<u32> {
    disagg_protocol::prompt::word_tokens(text)
}

/// A fingerprint of a prompt, the basis of its output tokens.
pub fn prompt_hash(seed: u64, tokens: &[u32]) -> u64 {
    let mut h = mix(OFFSET, &seed.to_le_bytes());
    for t in tokens {
        h = mix(h, &t.to_le_bytes());
    }
    finish(h)
}

/// The `position`-th generated token of a prompt.
pub fn output_token(prompt_hash: u64, position: u32) -> u32 {
    (finish(prompt_hash ^ u64::from(position).wrapping_mul(0x9e37_79b9_7f4a_7c15))
        % u64::from(VOCAB_SIZE)) as u32
}

/// A deterministic number in [0, 1) for a prompt and a purpose.
pub fn unit(prompt_hash: u64, salt: u64) -> f64 {
    (finish(prompt_hash ^ salt) >> 11) as f64 / (1u64 << 53) as f64
}

/// Append the text of a token.
pub fn push_text(out: &mut String, token: u32) {
    out.push(' ');
    out.push_str(WORDS[token as usize % WORDS.len()]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_counts_words() {
        assert_eq!(tokenize("  NVIDIA is a\tgreat company\n").len(), 5);
        assert_eq!(tokenize("a a"), {
            let t = tokenize("a");
            vec![t[0], t[0]]
        });
        assert!(tokenize("").is_empty());
    }

    #[test]
    fn outputs_depend_on_seed_prompt_and_position_only() {
        let p = [1, 2, 3];
        let h = prompt_hash(7, &p);
        assert_eq!(h, prompt_hash(7, &p));
        assert_ne!(h, prompt_hash(8, &p));
        assert_ne!(output_token(h, 0), output_token(h, 1));
        assert!(output_token(h, 5) < VOCAB_SIZE);
        let u = unit(h, 1);
        assert!((0.0..1.0).contains(&u));
    }
}
