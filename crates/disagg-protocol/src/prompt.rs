//! A prompt's token ids from its text, in the one place both the simulated engine and the
//! router take them from: the sim's word tokenizer and chat template, or a model's tokenizer and
//! chat template plugged in as functions (`disagg_bench::dataset::prompt_tokenizer` loads a
//! Hugging Face model directory: `tokenizer.json` and the Jinja chat template).
//!
//! The router hashes a prompt's blocks to find the worker that caches them; the hashes match the
//! worker's KV cache events only when both made the same ids from the same text, so the sim and
//! the router call the same functions here.
//!
//! ```
//! use disagg_protocol::prompt::{PromptTokenizer, word_tokens};
//! assert_eq!(word_tokens("the cache  is warm").len(), 4);
//! let ids = PromptTokenizer::Words.completion("the cache");
//! assert_eq!(ids, word_tokens("the cache"));
//! ```

use std::sync::Arc;

use crate::ChatMessage;

/// Token ids of the sim's vocabulary are below this.
pub const WORD_VOCAB: u32 = 32_000;

/// The sim's tokenizer: one token per whitespace-separated word, its id a hash of the word
/// (FNV-1a, then a SplitMix64 finaliser) below [`WORD_VOCAB`].
pub fn word_tokens(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .map(|w| {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in w.as_bytes() {
                h = (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((h ^ (h >> 31)) % u64::from(WORD_VOCAB)) as u32
        })
        .collect()
}

/// The sim's chat template, with `tokenize` for the text: `<|role|>` before each message's
/// text, `<|assistant|>` at the end (the generation prompt).
pub fn marker_chat_ids(messages: &[ChatMessage], tokenize: &dyn Fn(&str) -> Vec<u32>) -> Vec<u32> {
    let mut ids = Vec::new();
    for m in messages {
        ids.extend(tokenize(&format!("<|{}|>", m.role)));
        if let Some(c) = &m.content {
            ids.extend(tokenize(&c.text()));
        }
    }
    ids.extend(tokenize("<|assistant|>"));
    ids
}

/// Text → token ids.
pub type TokenizeFn = dyn Fn(&str) -> Vec<u32> + Send + Sync;

/// Chat messages → token ids, the chat template applied with the generation prompt; the error
/// says why the template could not be applied.
pub type ChatFn = dyn Fn(&[ChatMessage]) -> Result<Vec<u32>, String> + Send + Sync;

/// How a component that is not the engine turns a request's text into the engine's token ids.
#[derive(Clone)]
pub enum PromptTokenizer {
    /// The sim's own: [`word_tokens`], chat by [`marker_chat_ids`].
    Words,
    /// A model's tokenizer: `text` adds the special tokens the model's `tokenizer(prompt)` adds;
    /// `chat` applies its chat template as `apply_chat_template(messages,
    /// add_generation_prompt=True, tokenize=True)` does (`None`: the model has no template).
    Model {
        /// A completions prompt's ids.
        text: Arc<TokenizeFn>,
        /// A chat request's ids.
        chat: Option<Arc<ChatFn>>,
    },
}

impl std::fmt::Debug for PromptTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PromptTokenizer::Words => "PromptTokenizer::Words",
            PromptTokenizer::Model { chat: Some(_), .. } => "PromptTokenizer::Model(chat template)",
            PromptTokenizer::Model { chat: None, .. } => "PromptTokenizer::Model(no chat template)",
        })
    }
}

impl PromptTokenizer {
    /// A completions prompt's ids.
    pub fn completion(&self, text: &str) -> Vec<u32> {
        match self {
            PromptTokenizer::Words => word_tokens(text),
            PromptTokenizer::Model { text: f, .. } => f(text),
        }
    }

    /// A chat request's ids, its template applied; the error says why it could not be.
    pub fn chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, String> {
        match self {
            PromptTokenizer::Words => Ok(marker_chat_ids(messages, &word_tokens)),
            PromptTokenizer::Model { chat: Some(f), .. } => f(messages),
            PromptTokenizer::Model { chat: None, .. } => {
                Err("the model has no chat template".to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_tokens_and_equal_words_equal_ids() {
        assert_eq!(word_tokens("  NVIDIA is a\tgreat company\n").len(), 5);
        let a = word_tokens("a");
        assert_eq!(word_tokens("a a"), [a[0], a[0]]);
        assert!(word_tokens("").is_empty());
        assert!(word_tokens("x y z").iter().all(|&t| t < WORD_VOCAB));
    }

    #[test]
    fn the_chat_template_marks_each_role_and_ends_with_the_assistant() {
        let messages: Vec<ChatMessage> = serde_json::from_str(
            r#"[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello"}]}]"#,
        )
        .unwrap_or_default();
        let ids = PromptTokenizer::Words.chat(&messages).unwrap_or_default();
        assert_eq!(
            ids,
            word_tokens("<|system|> be brief <|user|> hello <|assistant|>")
        );
        let model = PromptTokenizer::Model {
            text: Arc::new(|t: &str| vec![t.len() as u32]),
            chat: None,
        };
        assert!(model.chat(&messages).is_err());
        assert_eq!(model.completion("abc"), [3]);
    }
}
