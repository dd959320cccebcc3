//! A model's chat template — the Jinja program of its `chat_template.jinja` or of
//! `tokenizer_config.json`'s `chat_template` — rendered as Hugging Face transformers renders it
//! in `apply_chat_template` (`transformers/utils/chat_template_utils.py`: a sandboxed Jinja
//! environment with `trim_blocks` and `lstrip_blocks`, `raise_exception`, the tokenizer's special
//! tokens, `add_generation_prompt`), so that a router that tokenizes chat requests itself (as
//! upstream's `KvCacheAwareRouter` does) makes the ids the engine makes. Python's string methods
//! the templates call (`strip`, `split`, `startswith`, ...) come from minijinja-contrib's
//! `pycompat`.

use std::path::Path;

use disagg_protocol::{ChatMessage, MessageContent};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::{Map, Value as Json};

use crate::dataset::DatasetError;

/// A chat template ready to render.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// Special tokens the template may name (`bos_token`, `eos_token`, ...).
    tokens: Map<String, Json>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

/// A special token of `tokenizer_config.json`: a string, or an added-token object's `content`.
fn token_text(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl ChatTemplate {
    /// The chat template of the model directory `dir`: `chat_template.jinja`, else
    /// `tokenizer_config.json`'s `chat_template` (a string, or the entry named `default` of a
    /// list of `{name, template}`); `None` when the model has none.
    pub fn load(dir: &Path) -> Result<Option<ChatTemplate>, DatasetError> {
        let bad = |file: &Path, why: String| DatasetError::Tokenizer {
            path: file.display().to_string(),
            why,
        };
        let config_file = dir.join("tokenizer_config.json");
        let config: Map<String, Json> = match std::fs::read_to_string(&config_file) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| bad(&config_file, format!("not a JSON object: {e}")))?,
            Err(_) => Map::new(),
        };
        let jinja_file = dir.join("chat_template.jinja");
        let source = match std::fs::read_to_string(&jinja_file) {
            Ok(s) => Some(s),
            Err(_) => match config.get("chat_template") {
                Some(Json::String(s)) => Some(s.clone()),
                Some(Json::Array(list)) => list
                    .iter()
                    .find(|t| t["name"] == "default")
                    .and_then(|t| t["template"].as_str())
                    .map(str::to_string),
                _ => None,
            },
        };
        let Some(source) = source else {
            return Ok(None);
        };
        let tokens = ["bos_token", "eos_token", "unk_token", "pad_token"]
            .iter()
            .filter_map(|k| Some((k.to_string(), Json::String(token_text(config.get(*k)?)?))))
            .collect();
        ChatTemplate::new(&source, tokens)
            .map(Some)
            .map_err(|e| bad(dir, format!("its chat template does not compile: {e}")))
    }

    /// A template from its source, with the special tokens it may name.
    pub fn new(source: &str, tokens: Map<String, Json>) -> Result<ChatTemplate, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| e.to_string())?;
        Ok(ChatTemplate { env, tokens })
    }

    /// The text of `messages` with the generation prompt, as
    /// `apply_chat_template(messages, add_generation_prompt=True, tokenize=False)`. A message's
    /// content is its text (the text parts of a list joined by newlines), as vLLM passes
    /// it to text-only templates; its other fields (`name`, `tool_calls`, ...) are passed as they came.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, String> {
        let messages: Vec<Json> = messages
            .iter()
            .map(|m| {
                let mut o = m.extra.clone();
                o.insert("role".into(), Json::String(m.role.clone()));
                let content = match &m.content {
                    None => Json::Null,
                    Some(MessageContent::Text(s)) => Json::String(s.clone()),
                    // vLLM's "string" content format (`renderers/chat_utils.py`): text parts
                    // joined by newlines.
                    Some(MessageContent::Parts(parts)) => Json::String(
                        parts
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Json::as_str))
                            .collect::<Vec<_>>()
                            .join("\n"),
                    ),
                };
                o.insert("content".into(), content);
                Json::Object(o)
            })
            .collect();
        let mut ctx = self.tokens.clone();
        ctx.insert("messages".into(), Json::Array(messages));
        ctx.insert("add_generation_prompt".into(), Json::Bool(true));
        let tpl = self.env.get_template("chat").map_err(|e| e.to_string())?;
        tpl.render(Value::from_serialize(&ctx))
            .map_err(|e| format!("its chat template failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(json: &str) -> Vec<ChatMessage> {
        serde_json::from_str(json).unwrap()
    }

    /// A ChatML template in the style of Qwen's: whitespace control, block trimming, Python
    /// string methods, a namespace, a reversed slice.
    const CHATML: &str = "{%- set ns = namespace(last_user=0) %}\n\
        {%- for m in messages[::-1] %}{%- if m.role == 'user' and ns.last_user == 0 %}{%- set ns.last_user = messages|length - loop.index0 %}{%- endif %}{%- endfor %}\n\
        {%- for message in messages %}\n\
            {{- '<|im_start|>' + message.role + '\\n' + message.content.strip() + '<|im_end|>\\n' }}\n\
        {%- endfor %}\n\
        {%- if add_generation_prompt %}\n\
            {{- '<|im_start|>assistant\\n' }}\n\
        {%- endif %}\n";

    #[test]
    fn a_chatml_template_renders_as_transformers_renders_it() {
        let t = ChatTemplate::new(CHATML, Map::new()).unwrap();
        let m = messages(
            r#"[{"role":"system","content":" be brief "},{"role":"user","content":[{"type":"text","text":"hello"}]}]"#,
        );
        assert_eq!(
            t.render(&m).unwrap(),
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn special_tokens_blocks_and_raise_exception() {
        let mut tokens = Map::new();
        tokens.insert("bos_token".into(), Json::String("<s>".into()));
        // Block tags on their own lines leave no blank lines (trim_blocks, lstrip_blocks).
        let src = "{{ bos_token }}\n    {% for m in messages %}\n[{{ m.role }}] {{ m.content }}\n    {% endfor %}\n{% if messages|length > 2 %}{{ raise_exception('too many') }}{% endif %}";
        let t = ChatTemplate::new(src, tokens).unwrap();
        let two = messages(r#"[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]"#);
        assert_eq!(t.render(&two).unwrap(), "<s>\n[user] a\n[assistant] b\n");
        let three = messages(
            r#"[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]"#,
        );
        let err = t.render(&three).unwrap_err();
        assert!(err.contains("too many"), "{err}");
    }

    #[test]
    fn a_model_directory_gives_its_template_file_or_its_configs_entry() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ChatTemplate::load(dir.path()).unwrap().is_none());
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            r#"{"bos_token": {"content": "<s>"}, "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ bos_token }}{{ messages[0].content }}"}]}"#,
        )
        .unwrap();
        let m = messages(r#"[{"role":"user","content":"hi"}]"#);
        let t = ChatTemplate::load(dir.path()).unwrap().unwrap();
        assert_eq!(t.render(&m).unwrap(), "<s>hi");
        std::fs::write(
            dir.path().join("chat_template.jinja"),
            "[{{ messages[0].role }}]",
        )
        .unwrap();
        let t = ChatTemplate::load(dir.path()).unwrap().unwrap();
        assert_eq!(t.render(&m).unwrap(), "[user]");
        std::fs::write(dir.path().join("chat_template.jinja"), "{% if %}").unwrap();
        let err = ChatTemplate::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("does not compile"), "{err}");
    }
}
