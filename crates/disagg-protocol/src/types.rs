//! OpenAI and TensorRT-LLM wire types.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A completions prompt: text, token ids, or (rejected by disaggregated servers) a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// One string.
    Text(String),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// Several strings.
    TextBatch(Vec<String>),
    /// Several token-id prompts.
    TokenBatch(Vec<Vec<u32>>),
}

/// `stream_options`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with `usage`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// TensorRT-LLM's `disaggregated_params`: the hand-off from a context server to a generation
/// server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DisaggregatedParams {
    /// `context_only` or `generation_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_type: Option<String>,
    /// The first token the context server generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_gen_tokens: Option<Vec<u32>>,
    /// The context server's request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx_request_id: Option<u64>,
    /// Opaque state the generation server needs to fetch the KV cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoded_opaque_state: Option<String>,
    /// Speculative draft tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_tokens: Option<Vec<u32>>,
    /// The coordinator's id for the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disagg_request_id: Option<u64>,
    /// Which leg the coordinator sends first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_style: Option<ScheduleStyle>,
    /// The context leg's usage (newer coordinators send it to the generation server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctx_usage: Option<Usage>,
    /// Everything else (`ctx_dp_rank`, `ctx_info_endpoint`, `conversation_id`, ...), kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl DisaggregatedParams {
    /// `request_type == "context_only"`.
    pub fn is_context_only(&self) -> bool {
        self.request_type.as_deref() == Some(REQUEST_CONTEXT_ONLY)
    }
    /// `request_type == "generation_only"`.
    pub fn is_generation_only(&self) -> bool {
        self.request_type.as_deref() == Some(REQUEST_GENERATION_ONLY)
    }
}

/// Upstream's `DisaggScheduleStyle` (`tensorrt_llm/disaggregated_params.py`, an `IntEnum`):
/// on the wire an integer, `0` = context first, `1` = generation first. Older coordinators and
/// configs spell it as a name (`context_first`); both are read, the integer is written, as
/// upstream's workers expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleStyle {
    /// `0`: the context leg, then the generation leg.
    ContextFirst,
    /// `1`: the generation leg is sent first and waits for the context's KV cache.
    GenerationFirst,
}

impl ScheduleStyle {
    /// The upstream integer.
    pub fn code(self) -> u8 {
        match self {
            ScheduleStyle::ContextFirst => 0,
            ScheduleStyle::GenerationFirst => 1,
        }
    }
}

impl Serialize for ScheduleStyle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for ScheduleStyle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ScheduleStyle, D::Error> {
        let bad = |what: &dyn std::fmt::Display| {
            serde::de::Error::custom(format!(
                "schedule_style `{what}`: use 0 (context_first) or 1 (generation_first)"
            ))
        };
        match Value::deserialize(d)? {
            Value::Number(n) => match n.as_u64() {
                Some(0) => Ok(ScheduleStyle::ContextFirst),
                Some(1) => Ok(ScheduleStyle::GenerationFirst),
                _ => Err(bad(&n)),
            },
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "0" | "context_first" | "disaggschedulestyle.context_first" => {
                    Ok(ScheduleStyle::ContextFirst)
                }
                "1" | "generation_first" | "disaggschedulestyle.generation_first" => {
                    Ok(ScheduleStyle::GenerationFirst)
                }
                _ => Err(bad(&s)),
            },
            other => Err(bad(&other)),
        }
    }
}

/// `request_type` of a context leg.
pub const REQUEST_CONTEXT_ONLY: &str = "context_only";
/// `request_type` of a generation leg.
pub const REQUEST_GENERATION_ONLY: &str = "generation_only";

/// The sampling and disaggregation fields shared by completions and chat requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    /// Output length limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<i64>,
    /// Minimum output length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<i64>,
    /// Generate until `max_tokens` whatever the model says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Stream with SSE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Stream options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// TensorRT-LLM hand-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disaggregated_params: Option<DisaggregatedParams>,
    /// vLLM hand-off (NIXL connector), kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_params: Option<Value>,
    /// SGLang hand-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_host: Option<Value>,
    /// SGLang hand-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_port: Option<Value>,
    /// SGLang hand-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap_room: Option<Value>,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// Model name.
    pub model: String,
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling and hand-off fields.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Everything else, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A chat message's content: a string or a list of parts (`{"type":"text","text":...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Typed parts.
    Parts(Vec<Value>),
}

impl MessageContent {
    /// The text of the content (text parts joined by spaces).
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(t) => t.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ...
    pub role: String,
    /// The content (absent for some assistant tool-call messages).
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// Other fields, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// Model name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// The newer spelling of `max_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<i64>,
    /// Set by a TensorRT-LLM coordinator on the generation leg: the templated prompt's ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
    /// Sampling and hand-off fields.
    #[serde(flatten)]
    pub sampling: Sampling,
    /// Everything else, kept.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Sum of both.
    pub total_tokens: u64,
    /// What the prompt tokens were made of: OpenAI's field, which vLLM fills (with
    /// `--enable-prompt-tokens-details`) from its prefix cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens the server did not compute: found in its prefix cache.
    pub cached_tokens: u64,
}

impl Usage {
    /// Usage for the given counts.
    pub fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_tokens_details: None,
        }
    }

    /// This usage saying `cached_tokens` of the prompt came from the prefix cache.
    pub fn with_cached(self, cached_tokens: u64) -> Usage {
        Usage {
            prompt_tokens_details: Some(PromptTokensDetails { cached_tokens }),
            ..self
        }
    }
}

/// One choice of a completions response or chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// Index.
    pub index: u32,
    /// Generated text.
    pub text: String,
    /// Generated token ids (TensorRT-LLM extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    /// Always null here.
    #[serde(default)]
    pub logprobs: Option<Value>,
    /// `length`, `stop`, `not_finished`, or null mid-stream.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Hand-off of a context leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disaggregated_params: Option<DisaggregatedParams>,
}

/// A completions response (`object: text_completion`); stream chunks have the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionResponse {
    /// Response id.
    pub id: String,
    /// `text_completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: String,
    /// Choices (none in a usage-only chunk).
    pub choices: Vec<CompletionChoice>,
    /// Usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Prompt token ids (context legs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
    /// vLLM hand-off (prefill responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_params: Option<Value>,
}

/// A chat message in a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// `assistant`.
    pub role: String,
    /// Generated text.
    pub content: String,
}

/// One choice of a chat response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Index.
    pub index: u32,
    /// The message.
    pub message: ResponseMessage,
    /// Why it ended.
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Hand-off of a context leg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disaggregated_params: Option<DisaggregatedParams>,
}

/// A chat response (`object: chat.completion`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Response id.
    pub id: String,
    /// `chat.completion`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: String,
    /// Choices.
    pub choices: Vec<ChatChoice>,
    /// Usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Prompt token ids (context legs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<Vec<u32>>,
    /// vLLM hand-off (prefill responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_transfer_params: Option<Value>,
}

/// The delta of a chat stream chunk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatDelta {
    /// Set on the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chat stream chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    /// Index.
    pub index: u32,
    /// The delta.
    pub delta: ChatDelta,
    /// Why it ended, on the last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A chat stream chunk (`object: chat.completion.chunk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Response id.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Model name.
    pub model: String,
    /// Choices (none in a usage-only chunk).
    pub choices: Vec<ChatChunkChoice>,
    /// Usage, on the final chunk when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The body of an error response: `{"error": {"message", "type", "code"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The error.
    pub error: ErrorBody,
}

/// The error object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub message: String,
    /// `invalid_request_error`, `server_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// HTTP status or a short code.
    #[serde(default)]
    pub code: Option<Value>,
}

impl ErrorResponse {
    /// An error body.
    pub fn new(message: impl Into<String>, kind: &str, code: u16) -> ErrorResponse {
        ErrorResponse {
            error: ErrorBody {
                message: message.into(),
                kind: kind.to_string(),
                code: Some(Value::from(code)),
            },
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelCard>,
}

/// One model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Its name.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Who serves it.
    pub owned_by: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_keep_unknown_fields() {
        let body = r#"{"model":"m","prompt":"hi","max_tokens":3,"temperature":0.5,
            "disaggregated_params":{"request_type":"context_only","disagg_request_id":7,"conversation_id":null}}"#;
        let req: CompletionRequest = serde_json::from_str(body).unwrap();
        assert_eq!(req.sampling.max_tokens, Some(3));
        assert_eq!(req.extra["temperature"], 0.5);
        let p = req.sampling.disaggregated_params.as_ref().unwrap();
        assert!(p.is_context_only());
        assert!(p.extra.contains_key("conversation_id"));
        let back = serde_json::to_value(&req).unwrap();
        assert_eq!(back["temperature"], 0.5);
        assert_eq!(back["disaggregated_params"]["disagg_request_id"], 7);
    }

    #[test]
    fn prompts_of_every_shape() {
        let p = |s: &str| serde_json::from_str::<Prompt>(s).unwrap();
        assert_eq!(p("\"x\""), Prompt::Text("x".into()));
        assert_eq!(p("[1,2]"), Prompt::Tokens(vec![1, 2]));
        assert_eq!(
            p("[\"a\",\"b\"]"),
            Prompt::TextBatch(vec!["a".into(), "b".into()])
        );
        assert_eq!(p("[[1],[2]]"), Prompt::TokenBatch(vec![vec![1], vec![2]]));
    }

    #[test]
    fn chat_content_parts_join_their_text() {
        let m: ChatMessage = serde_json::from_str(
            r#"{"role":"user","content":[{"type":"text","text":"a b"},{"type":"text","text":"c"}]}"#,
        )
        .unwrap();
        assert_eq!(m.content.unwrap().text(), "a b c");
    }

    #[test]
    fn error_body_is_openai_shaped() {
        let e =
            serde_json::to_value(ErrorResponse::new("bad", "invalid_request_error", 400)).unwrap();
        assert_eq!(
            e,
            serde_json::json!({"error":{"message":"bad","type":"invalid_request_error","code":400}})
        );
    }
}
