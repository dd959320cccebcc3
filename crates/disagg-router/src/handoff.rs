//! How the two legs of one request are tied together: the engine's own hand-off. One flow
//! (`flow.rs`) runs every request — context leg, then generation leg — and asks this module
//! what to add to each leg and what to take from the context's answer.
//!
//! - TensorRT-LLM (`trtllm-serve disaggregated`, `openai_disagg_service.py`): the context leg
//!   carries `disaggregated_params {request_type: context_only, disagg_request_id,
//!   schedule_style: 0}`; its answer's `choices[0].disaggregated_params` (and prompt token ids,
//!   usage) go into the generation leg with `request_type: generation_only`.
//! - vLLM (NIXL connector; vLLM's `toy_proxy_server.py` and `vllm-router`): the prefill leg asks
//!   for one token with `kv_transfer_params {do_remote_decode: true, ...}`; the decode leg is the
//!   client's request with the `kv_transfer_params` the prefill answered.
//! - SGLang (`sglang-router`/`smg` in PD mode): both legs get the client's request plus
//!   `bootstrap_host` (the prefill server's host), `bootstrap_port` (its KV bootstrap port) and
//!   `bootstrap_room` (a random 63-bit id), sent at once; the decode answer is the client's.
//! - Aggregated: no hand-off; every request goes whole to one server of the generation pool.

use serde_json::{Value, json};

use disagg_protocol::ScheduleStyle;

/// The engines' hand-off protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HandOff {
    /// TensorRT-LLM `disaggregated_params`.
    #[default]
    Trtllm,
    /// vLLM `kv_transfer_params` (NIXL).
    Vllm,
    /// SGLang `bootstrap_host/port/room`, both legs at once.
    Sglang,
    /// No hand-off: aggregated servers, each request whole to one generation-pool server.
    Aggregated,
}

/// SGLang's default `--disaggregation-bootstrap-port`, used when no port is given.
pub const SGLANG_DEFAULT_BOOTSTRAP_PORT: u16 = 8998;

/// The names `HandOff` parses, for messages.
pub const HANDOFF_NAMES: &str = "trtllm, vllm, sglang or aggregated";

impl HandOff {
    /// `trtllm` or `vllm`.
    pub fn name(self) -> &'static str {
        match self {
            HandOff::Trtllm => "trtllm",
            HandOff::Vllm => "vllm",
            HandOff::Sglang => "sglang",
            HandOff::Aggregated => "aggregated",
        }
    }

    /// Whether the two legs go out at once (SGLang) rather than context first.
    pub(crate) fn concurrent(self) -> bool {
        self == HandOff::Sglang
    }

    /// Whether requests go whole to one server (no context leg at all).
    pub fn is_aggregated(self) -> bool {
        self == HandOff::Aggregated
    }

    /// SGLang: the client's request plus the bootstrap fields of the chosen prefill server.
    pub(crate) fn bootstrap(req: &mut Value, host: &str, port: u16, room: u64) {
        req["bootstrap_host"] = json!(host);
        req["bootstrap_port"] = json!(port);
        req["bootstrap_room"] = json!(room);
    }

    /// Turn a copy of the client's request into the context leg (`id`: this request's id).
    pub(crate) fn context_leg(self, req: &mut Value, id: u64) {
        req["stream"] = json!(false);
        req["stream_options"] = Value::Null;
        match self {
            HandOff::Trtllm => {
                // Upstream's workers read `schedule_style` as an integer enum.
                req["disaggregated_params"] = json!({"request_type": "context_only",
                    "disagg_request_id": id, "schedule_style": ScheduleStyle::ContextFirst});
            }
            HandOff::Vllm => {
                if let Some(map) = req.as_object_mut() {
                    map.remove("stream_options");
                    if map.contains_key("max_completion_tokens") {
                        map.insert("max_completion_tokens".into(), json!(1));
                    }
                }
                req["max_tokens"] = json!(1);
                req["kv_transfer_params"] = json!({"do_remote_decode": true,
                    "do_remote_prefill": false, "remote_engine_id": null,
                    "remote_block_ids": null, "remote_host": null, "remote_port": null});
            }
            // Both legs carry the client's request (see `bootstrap`); none goes out alone.
            HandOff::Sglang | HandOff::Aggregated => {}
        }
    }

    /// What is wrong with the context's answer for the generation leg, if anything.
    pub(crate) fn check_context(self, ctx: &Value) -> Option<&'static str> {
        match self {
            HandOff::Trtllm => ctx["choices"][0]["disaggregated_params"]["ctx_request_id"]
                .is_null()
                .then_some("no disaggregated_params.ctx_request_id"),
            HandOff::Vllm => (!ctx["kv_transfer_params"].is_object()).then_some(
                "no kv_transfer_params (is the NIXL connector configured as kv_producer?)",
            ),
            HandOff::Sglang | HandOff::Aggregated => None,
        }
    }

    /// Whether the context leg already finished the request (no generation leg needed).
    pub(crate) fn finished_at_context(self, ctx: &Value) -> bool {
        match self {
            HandOff::Trtllm => {
                let finish = ctx["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap_or("length");
                finish != "length" && finish != "not_finished"
            }
            // The prefill leg asked for one token: its finish says nothing about the request.
            HandOff::Vllm | HandOff::Sglang | HandOff::Aggregated => false,
        }
    }

    /// Turn the client's request into the generation leg, with what the context answered.
    pub(crate) fn generation_leg(self, req: &mut Value, ctx: &Value, chat: bool) {
        match self {
            HandOff::Trtllm => {
                let mut params = ctx["choices"][0]["disaggregated_params"].clone();
                params["request_type"] = json!("generation_only");
                params["schedule_style"] = json!(ScheduleStyle::ContextFirst);
                if !ctx["usage"].is_null() {
                    params["ctx_usage"] = ctx["usage"].clone();
                }
                if !ctx["prompt_token_ids"].is_null() {
                    let key = if chat { "prompt_token_ids" } else { "prompt" };
                    req[key] = ctx["prompt_token_ids"].clone();
                }
                req["disaggregated_params"] = params;
            }
            HandOff::Vllm => req["kv_transfer_params"] = ctx["kv_transfer_params"].clone(),
            HandOff::Sglang | HandOff::Aggregated => {}
        }
    }
}

impl std::str::FromStr for HandOff {
    type Err = String;

    fn from_str(s: &str) -> Result<HandOff, String> {
        match s {
            "trtllm" => Ok(HandOff::Trtllm),
            "vllm" => Ok(HandOff::Vllm),
            "sglang" => Ok(HandOff::Sglang),
            "aggregated" => Ok(HandOff::Aggregated),
            _ => Err(format!("hand-off `{s}`: use {HANDOFF_NAMES}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vllm_legs_follow_the_nixl_proxy() {
        let client = json!({"model": "m", "prompt": "hi", "max_tokens": 16, "stream": true,
            "stream_options": {"include_usage": true}});
        let mut ctx_req = client.clone();
        HandOff::Vllm.context_leg(&mut ctx_req, 1);
        assert_eq!(ctx_req["max_tokens"], 1);
        assert_eq!(ctx_req["stream"], false);
        assert!(ctx_req.get("stream_options").is_none());
        assert_eq!(ctx_req["kv_transfer_params"]["do_remote_decode"], true);
        let answer = json!({"choices": [{"finish_reason": "length"}],
            "kv_transfer_params": {"do_remote_prefill": true, "remote_block_ids": [1, 2]}});
        assert_eq!(HandOff::Vllm.check_context(&answer), None);
        assert!(!HandOff::Vllm.finished_at_context(&answer));
        let mut gen_req = client.clone();
        HandOff::Vllm.generation_leg(&mut gen_req, &answer, false);
        assert_eq!(
            gen_req["kv_transfer_params"]["remote_block_ids"],
            json!([1, 2])
        );
        assert_eq!(gen_req["max_tokens"], 16, "the client's request otherwise");
        assert!(
            HandOff::Vllm
                .check_context(&json!({"choices": []}))
                .is_some()
        );
    }

    #[test]
    fn trtllm_legs_carry_the_integer_schedule_style() {
        let mut ctx_req = json!({"model": "m", "prompt": "hi"});
        HandOff::Trtllm.context_leg(&mut ctx_req, 9);
        assert_eq!(ctx_req["disaggregated_params"]["schedule_style"], 0);
        assert_eq!(ctx_req["disaggregated_params"]["disagg_request_id"], 9);
        let answer = json!({"choices": [{"finish_reason": "stop",
            "disaggregated_params": {"ctx_request_id": 3}}], "prompt_token_ids": [5, 6]});
        assert!(HandOff::Trtllm.finished_at_context(&answer));
        let mut gen_req = json!({"model": "m", "messages": []});
        HandOff::Trtllm.generation_leg(&mut gen_req, &answer, true);
        assert_eq!(gen_req["prompt_token_ids"], json!([5, 6]));
        assert_eq!(
            gen_req["disaggregated_params"]["request_type"],
            "generation_only"
        );
        assert_eq!("vllm".parse::<HandOff>(), Ok(HandOff::Vllm));
        assert_eq!("sglang".parse::<HandOff>(), Ok(HandOff::Sglang));
        assert!("nixl".parse::<HandOff>().is_err());
    }

    #[test]
    fn sglang_legs_carry_the_same_bootstrap() {
        let mut req = json!({"model": "m", "prompt": "hi", "stream": true, "max_tokens": 4});
        HandOff::bootstrap(&mut req, "10.0.0.2", 8998, 42);
        assert_eq!(req["bootstrap_host"], "10.0.0.2");
        assert_eq!(req["bootstrap_port"], 8998);
        assert_eq!(req["bootstrap_room"], 42);
        assert_eq!(req["stream"], true, "the client's request otherwise");
        assert!(HandOff::Sglang.concurrent() && !HandOff::Vllm.concurrent());
        assert!(HandOff::Aggregated.is_aggregated());
    }
}
