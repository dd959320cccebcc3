//! The engine's iteration: which sequences run in the next step, how long the step takes, and
//! what it produces. Pure: no clock, no I/O; the async shell in [`crate::engine`] sleeps for the
//! returned durations.
//!
//! # Cost model
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `prefill_tokens_per_s` | 20 000 | prefill throughput of one GPU; a step's prefill costs `tokens / (this × tensor_parallel)`; 0 = free |
//! | `tensor_parallel` | from `tensor_parallel_size` | scales prefill throughput |
//! | `decode_step_base_ms` | 8.0 | fixed cost of any step that runs work |
//! | `decode_step_per_seq_ms` | 0.05 | added per decoding sequence in the step |
//! | `kv_transfer_gb_per_s` | 25.0 | hand-off bandwidth; a generation leg waits `prompt × kv_bytes_per_token / bandwidth` before it is queued; 0 = free |
//! | `kv_bytes_per_token` | 131 072 | KV-cache bytes one token occupies (Llama-3-8B in bf16) |
//! | `kv_capacity_tokens` | 1 048 576 | tokens of KV cache; a sequence reserves `prompt + output` when admitted and waits while it does not fit |
//! | `max_batch_size` | from `max_batch_size` (512) | most sequences admitted at once |
//! | `max_num_tokens` | from `max_num_tokens` (2048) | most tokens one step processes; prompts longer than what is left are prefilled in chunks |
//! | [`Speculation`] | from `speculative_config` and `TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS` (none) | draft tokens verified and accepted per decode step |
//!
//! One step:
//! 1. admit waiting sequences first-in first-out while fewer than `max_batch_size` run and their
//!    KV reservation fits (the head of the queue blocks the rest);
//! 2. every running sequence whose prompt is prefilled decodes one token, plus its accepted draft
//!    tokens with speculative decoding, taking `1 + draft_len` of the step's `max_num_tokens`
//!    budget (the target model verifies every draft token);
//! 3. the remaining token budget goes to prompts still being prefilled, oldest first, in chunks;
//! 4. `duration = decode_step_base_ms + decode_step_per_seq_ms × decoding + prefill_tokens /
//!    (prefill_tokens_per_s × tensor_parallel)`, or zero when nothing ran;
//! 5. a sequence whose prefill completes emits its first token; each decoding sequence emits one;
//!    a hand-off sequence (generation leg) emits the context's first token together with its
//!    first decoded one. Finished sequences release their slot and KV.
//!
//! So at concurrency 1 an aggregated request of `P` prompt tokens (`P ≤ max_num_tokens`) sees
//! `TTFT = base + P / (rate × tp)` and `TPOT = base + per_seq`.
//!
//! # Prefix caching
//!
//! With a [`PrefixCache`] (upstream's `enable_block_reuse`, on by default), a sequence that
//! carries its prompt's full-block hashes ([`SeqSpec::prefix`]) looks them up on admission: the
//! leading blocks found are shared, not reserved again, and their tokens are not prefilled — a
//! cached prefix of `C` tokens makes that TTFT `base + (P − C) / (rate × tp)`. When its prefill
//! completes, its blocks join the table (a hand-off's at once: its KV arrived whole). A finished
//! sequence's blocks stay cached, unreferenced, and count against `kv_capacity_tokens`
//! (`blocks × tokens_per_block`) until admission needs their space: then the least recently used
//! go first. Blocks never held by the table (the partial last block, the output) are reserved
//! per sequence as before.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use crate::prefix_cache::{CacheSettings, CacheStats, PrefixCache};
use disagg_protocol::kv_cache::KvCacheEventData;

/// Timing parameters. See the module docs for defaults and meaning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostModel {
    /// Prefill tokens per second per GPU (0 = free).
    pub prefill_tokens_per_s: f64,
    /// Tensor parallel size.
    pub tensor_parallel: u32,
    /// Fixed cost of a step, ms.
    pub decode_step_base_ms: f64,
    /// Cost per decoding sequence, ms.
    pub decode_step_per_seq_ms: f64,
    /// KV hand-off bandwidth, GB/s (0 = free).
    pub kv_transfer_gb_per_s: f64,
    /// KV bytes per token.
    pub kv_bytes_per_token: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            prefill_tokens_per_s: 20_000.0,
            tensor_parallel: 1,
            decode_step_base_ms: 8.0,
            decode_step_per_seq_ms: 0.05,
            kv_transfer_gb_per_s: 25.0,
            kv_bytes_per_token: 131_072.0,
        }
    }
}

impl CostModel {
    /// Every cost zero: the engine runs as fast as the machine allows.
    pub fn zero() -> CostModel {
        CostModel {
            prefill_tokens_per_s: 0.0,
            tensor_parallel: 1,
            decode_step_base_ms: 0.0,
            decode_step_per_seq_ms: 0.0,
            kv_transfer_gb_per_s: 0.0,
            kv_bytes_per_token: 0.0,
        }
    }

    /// Duration of a step that decodes `decoding` sequences and prefills `prefill_tokens`.
    pub fn step_time(&self, decoding: u32, prefill_tokens: u32) -> Duration {
        if decoding == 0 && prefill_tokens == 0 {
            return Duration::ZERO;
        }
        let mut ms = self.decode_step_base_ms + self.decode_step_per_seq_ms * f64::from(decoding);
        if self.prefill_tokens_per_s > 0.0 {
            let rate = self.prefill_tokens_per_s * f64::from(self.tensor_parallel.max(1));
            ms += 1000.0 * f64::from(prefill_tokens) / rate;
        }
        Duration::from_secs_f64(ms.max(0.0) / 1000.0)
    }

    /// Time to move the KV cache of `prompt_tokens` from a context server.
    pub fn transfer_time(&self, prompt_tokens: u32) -> Duration {
        if self.kv_transfer_gb_per_s <= 0.0 || self.kv_bytes_per_token <= 0.0 {
            return Duration::ZERO;
        }
        let bytes = f64::from(prompt_tokens) * self.kv_bytes_per_token;
        Duration::from_secs_f64(bytes / (self.kv_transfer_gb_per_s * 1e9))
    }
}

/// Speculative decoding (MTP, Eagle): every decode step of a sequence verifies `draft_len` draft
/// tokens and keeps `accepted` of them, as TensorRT-LLM does with
/// `TLLM_SPEC_DECODE_FORCE_NUM_ACCEPTED_TOKENS` (the upstream perf configs set it so that output
/// lengths and acceptance are stable). So a step emits `1 + accepted` tokens per decoding
/// sequence, and the engine's "average decoded tokens per iteration" is `generated / steps`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Speculation {
    /// Draft tokens per step (`max_draft_len`, `num_nextn_predict_layers`); 0 = none.
    pub draft_len: u32,
    /// Of which accepted per step (at most `draft_len`).
    pub accepted: u32,
}

impl Speculation {
    /// Whether there is speculative decoding at all.
    pub fn is_on(&self) -> bool {
        self.draft_len > 0
    }
}

/// Capacity limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sequences admitted at once.
    pub max_batch_size: u32,
    /// Tokens per step.
    pub max_num_tokens: u32,
    /// KV-cache capacity in tokens.
    pub kv_capacity_tokens: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_size: 512,
            max_num_tokens: 2048,
            kv_capacity_tokens: 1 << 20,
        }
    }
}

/// A prompt's full blocks: their chained hashes and the prompt's tokens (for the events).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromptBlocks {
    /// Hashes of the full blocks, in order.
    pub hashes: Vec<u64>,
    /// The prompt's token ids.
    pub tokens: Vec<u32>,
}

/// A sequence to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSpec {
    /// Caller's id.
    pub id: u64,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Tokens to emit in all (≥ 1).
    pub output_tokens: u32,
    /// True when the KV cache arrives from a context server: no prefill, and the context's
    /// first token is emitted with the first decoded one.
    pub handoff: bool,
    /// The prompt's blocks, to reuse cached ones and publish new ones (`None`: nothing reused).
    pub prefix: Option<Arc<PromptBlocks>>,
}

impl SeqSpec {
    fn kv_tokens(&self) -> u64 {
        u64::from(self.prompt_tokens) + u64::from(self.output_tokens)
    }
}

#[derive(Debug, Clone)]
struct Seq {
    spec: SeqSpec,
    prefilled: u32,
    emitted: u32,
    /// Table blocks this sequence references.
    held: Vec<u64>,
    /// KV tokens reserved for it alone.
    private: u64,
    /// Prompt tokens that came from the cache.
    cached: u32,
}

impl Seq {
    fn hashes(&self) -> &[u64] {
        self.spec.prefix.as_ref().map_or(&[], |p| &p.hashes)
    }
}

/// Tokens a sequence emitted in a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emission {
    /// The sequence.
    pub id: u64,
    /// How many new tokens.
    pub tokens: u32,
    /// Whether it has emitted all its tokens.
    pub finished: bool,
}

/// What one step did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// How long it takes.
    pub duration: Duration,
    /// Sequences that decoded.
    pub decoding: u32,
    /// Prompt tokens prefilled.
    pub prefill_tokens: u32,
    /// Sequences that prefilled (a chunk of their prompt).
    pub prefilling: u32,
    /// Tokens the decoding sequences ran through the model: `1 + draft_len` each.
    pub generation_tokens: u32,
    /// Tokens emitted, per sequence, in admission order.
    pub emissions: Vec<Emission>,
    /// Sequences admitted in this step and their prompt tokens found in the cache.
    pub admitted: Vec<(u64, u32)>,
}

impl Step {
    /// Requests the step ran.
    pub fn scheduled(&self) -> u32 {
        self.decoding + self.prefilling
    }

    /// The step as TensorRT-LLM's PyTorch executor logs an iteration (`print_iter_log`), with
    /// the fields upstream's gen-only metric reads: `iter`, `global_rank`,
    /// `prev_device_step_time` (the previous step's duration: the device runs one step behind;
    /// `N/A` for the first), `num_scheduled_requests` and `'num_generation_tokens'`.
    pub fn iteration_log(&self, iter: u64, previous: Option<Duration>) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let prev = previous.map_or_else(|| "N/A".to_string(), |d| format!("{:.2}ms", ms(d)));
        format!(
            "iter = {iter}, global_rank = 0, rank = 0, host_step_time = {:.2}ms, \
             prev_device_step_time = {prev}, num_scheduled_requests = {}, states = \
             {{'num_ctx_requests': {}, 'num_ctx_tokens': {}, 'num_generation_tokens': {}}}",
            ms(self.duration),
            self.scheduled(),
            self.prefilling,
            self.prefill_tokens,
            self.generation_tokens,
        )
    }
}

/// Why a sequence was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// Its KV reservation exceeds the whole cache.
    #[error("the request needs {need} KV-cache tokens but the cache holds {capacity}")]
    TooLarge {
        /// Tokens it needs.
        need: u64,
        /// Cache size.
        capacity: u64,
    },
    /// Zero output tokens.
    #[error("a request must produce at least one token")]
    NoOutput,
}

/// Continuous-batching scheduler state.
#[derive(Debug, Clone)]
pub struct Scheduler {
    cost: CostModel,
    limits: Limits,
    speculation: Speculation,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    /// KV tokens reserved by running sequences outside the block table.
    private: u64,
    cache: PrefixCache,
}

impl Scheduler {
    /// An empty scheduler with upstream's default block reuse.
    pub fn new(cost: CostModel, limits: Limits) -> Scheduler {
        Scheduler {
            cost,
            limits,
            speculation: Speculation::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            private: 0,
            cache: PrefixCache::new(CacheSettings::default()),
        }
    }

    /// The same scheduler decoding speculatively (`accepted` is capped at `draft_len`).
    pub fn with_speculation(mut self, s: Speculation) -> Scheduler {
        self.speculation = Speculation {
            draft_len: s.draft_len,
            accepted: s.accepted.min(s.draft_len),
        };
        self
    }

    /// The same with these block settings.
    pub fn with_cache(mut self, settings: CacheSettings) -> Scheduler {
        self.cache = PrefixCache::new(settings);
        self
    }

    /// The block settings.
    pub fn cache_settings(&self) -> CacheSettings {
        self.cache.settings()
    }

    /// Lookup counters of the block table.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// KV tokens held by cached blocks no running sequence uses (evictable).
    pub fn kv_cached_free(&self) -> u64 {
        self.cache.evictable() as u64 * self.cache.block_tokens()
    }

    /// The KV cache events recorded since the last call.
    pub fn take_events(&mut self) -> Vec<KvCacheEventData> {
        self.cache.take_events()
    }

    /// The cost model.
    pub fn cost(&self) -> &CostModel {
        &self.cost
    }

    /// Queue a sequence.
    pub fn submit(&mut self, spec: SeqSpec) -> Result<(), AdmitError> {
        if spec.output_tokens == 0 {
            return Err(AdmitError::NoOutput);
        }
        if spec.kv_tokens() > self.limits.kv_capacity_tokens {
            return Err(AdmitError::TooLarge {
                need: spec.kv_tokens(),
                capacity: self.limits.kv_capacity_tokens,
            });
        }
        let prefilled = if spec.handoff { spec.prompt_tokens } else { 0 };
        self.waiting.push_back(Seq {
            spec,
            prefilled,
            emitted: 0,
            held: Vec::new(),
            private: 0,
            cached: 0,
        });
        Ok(())
    }

    /// KV tokens the table's blocks occupy, referenced or not.
    fn table_tokens(&self) -> u64 {
        self.cache.blocks() as u64 * self.cache.block_tokens()
    }

    /// Admit the head of the queue if its KV fits, evicting unreferenced cached blocks as
    /// needed; returns whether it was admitted.
    fn admit_head(&mut self) -> bool {
        let Some(head) = self.waiting.front() else {
            return false;
        };
        let block = self.cache.block_tokens();
        let hit = self.cache.lookup(head.hashes());
        let need = head.spec.kv_tokens() - hit as u64 * block;
        // Space: what is not reserved, counting cached blocks nobody uses as free — except the
        // ones this sequence is about to use.
        let evictable = (self.cache.evictable() - self.cache.free_among(head.hashes(), hit)) as u64;
        let occupied = self.private + self.table_tokens() - evictable * block;
        if self.running.len() >= self.limits.max_batch_size as usize
            || occupied + need > self.limits.kv_capacity_tokens
        {
            return false;
        }
        let Some(mut seq) = self.waiting.pop_front() else {
            return false;
        };
        let hashes = seq.hashes().to_vec();
        self.cache.acquire(&hashes[..hit]);
        let over = (self.private + self.table_tokens() + need)
            .saturating_sub(self.limits.kv_capacity_tokens);
        self.cache.evict(over.div_ceil(block) as usize);
        seq.held = hashes[..hit].to_vec();
        seq.private = need;
        self.private += need;
        if seq.spec.handoff {
            // The KV arrived whole: its blocks are reusable at once.
            self.store_blocks(&mut seq);
        } else if seq.spec.prefix.is_some() {
            seq.cached = (hit as u64 * block) as u32;
            seq.prefilled = seq.cached;
            self.cache
                .count_lookup(seq.spec.prompt_tokens, hashes.len(), hit);
        }
        self.running.push(seq);
        true
    }

    /// Move a prefilled sequence's blocks that are not in the table yet into it.
    fn store_blocks(&mut self, seq: &mut Seq) {
        let Some(prefix) = seq.spec.prefix.clone() else {
            return;
        };
        let block = self.cache.block_tokens() as usize;
        let added = self.cache.insert(&prefix.hashes, seq.held.len(), |i| {
            prefix
                .tokens
                .get(i * block..(i + 1) * block)
                .map(<[u32]>::to_vec)
                .unwrap_or_default()
        });
        let moved = added.len() as u64 * block as u64;
        seq.private -= moved;
        self.private -= moved;
        seq.held.extend(added);
    }

    /// Release what a leaving sequence holds.
    fn release(&mut self, seq: &Seq) {
        self.private -= seq.private;
        self.cache.release(&seq.held);
    }

    /// Drop a sequence wherever it is, releasing its slot and KV. Returns whether it existed.
    pub fn cancel(&mut self, id: u64) -> bool {
        if let Some(i) = self.waiting.iter().position(|s| s.spec.id == id) {
            self.waiting.remove(i);
            return true;
        }
        if let Some(i) = self.running.iter().position(|s| s.spec.id == id) {
            let seq = self.running.remove(i);
            self.release(&seq);
            return true;
        }
        false
    }

    /// Sequences admitted.
    pub fn running(&self) -> usize {
        self.running.len()
    }
    /// Sequences queued.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
    /// KV tokens reserved by running sequences (their own and the cached blocks they use).
    pub fn kv_used(&self) -> u64 {
        self.private + self.cache.referenced_blocks() as u64 * self.cache.block_tokens()
    }
    /// KV capacity.
    pub fn kv_capacity(&self) -> u64 {
        self.limits.kv_capacity_tokens
    }
    /// Whether there is nothing to do.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Run one iteration.
    pub fn step(&mut self) -> Step {
        // 1. Admission, FIFO.
        let mut admitted = Vec::new();
        while self.admit_head() {
            if let Some(seq) = self.running.last() {
                admitted.push((seq.spec.id, seq.cached));
            }
        }
        // 2. Decode budget, then 3. prefill chunks.
        let mut budget = self.limits.max_num_tokens;
        let mut decoding = 0u32;
        let mut prefill_tokens = 0u32;
        let mut prefilling = 0u32;
        let mut emissions = Vec::new();
        let spec = self.speculation;
        for seq in &mut self.running {
            let prefill_done = seq.prefilled >= seq.spec.prompt_tokens;
            if prefill_done {
                let width = 1 + spec.draft_len;
                if budget < width {
                    continue;
                }
                budget -= width;
                decoding += 1;
                let gain = 1 + spec.accepted;
                // A hand-off emits the context's token with its first decoded ones.
                let new = if seq.spec.handoff && seq.emitted == 0 {
                    (1 + gain).min(seq.spec.output_tokens)
                } else {
                    gain.min(seq.spec.output_tokens - seq.emitted)
                };
                seq.emitted += new;
                emissions.push(Emission {
                    id: seq.spec.id,
                    tokens: new,
                    finished: seq.emitted >= seq.spec.output_tokens,
                });
            }
        }
        let mut prefilled_now = Vec::new();
        for (i, seq) in self.running.iter_mut().enumerate() {
            let left = seq.spec.prompt_tokens - seq.prefilled;
            if left == 0 || budget == 0 {
                continue;
            }
            let chunk = left.min(budget);
            budget -= chunk;
            prefill_tokens += chunk;
            prefilling += 1;
            seq.prefilled += chunk;
            if seq.prefilled == seq.spec.prompt_tokens {
                seq.emitted = 1;
                prefilled_now.push(i);
                emissions.push(Emission {
                    id: seq.spec.id,
                    tokens: 1,
                    finished: seq.spec.output_tokens <= 1,
                });
            }
        }
        // A prompt's blocks become reusable once it is prefilled.
        for i in prefilled_now {
            let mut seq = self.running[i].clone();
            self.store_blocks(&mut seq);
            self.running[i] = seq;
        }
        // 5. Release finished sequences.
        let finished: Vec<u64> = emissions
            .iter()
            .filter(|e| e.finished)
            .map(|e| e.id)
            .collect();
        if !finished.is_empty() {
            let (done, running): (Vec<Seq>, Vec<Seq>) = std::mem::take(&mut self.running)
                .into_iter()
                .partition(|s| finished.contains(&s.spec.id));
            self.running = running;
            for seq in &done {
                self.release(seq);
            }
        }
        Step {
            duration: self.cost.step_time(decoding, prefill_tokens),
            decoding,
            prefill_tokens,
            prefilling,
            generation_tokens: decoding * (1 + spec.draft_len),
            emissions,
            admitted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    /// base 10 ms, 1 ms per decoding sequence, 1000 prompt tokens/s.
    fn simple() -> CostModel {
        CostModel {
            prefill_tokens_per_s: 1000.0,
            tensor_parallel: 1,
            decode_step_base_ms: 10.0,
            decode_step_per_seq_ms: 1.0,
            kv_transfer_gb_per_s: 1.0,
            kv_bytes_per_token: 1_000_000.0,
        }
    }

    fn spec(id: u64, prompt: u32, output: u32) -> SeqSpec {
        SeqSpec {
            id,
            prompt_tokens: prompt,
            output_tokens: output,
            handoff: false,
            prefix: None,
        }
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_nanos(10)
    }

    #[test]
    fn chunked_prefill_then_decode_with_exact_times() {
        let limits = Limits {
            max_batch_size: 8,
            max_num_tokens: 64,
            kv_capacity_tokens: 1000,
        };
        let mut s = Scheduler::new(simple(), limits);
        s.submit(spec(1, 100, 3)).unwrap();
        let st = s.step();
        assert_eq!((st.prefill_tokens, st.decoding), (64, 0));
        assert!(close(st.duration, ms(74.0)), "{:?}", st.duration);
        assert!(st.emissions.is_empty());
        let st = s.step();
        assert_eq!(st.prefill_tokens, 36);
        assert!(close(st.duration, ms(46.0)));
        assert_eq!(
            st.emissions,
            [Emission {
                id: 1,
                tokens: 1,
                finished: false
            }]
        );
        for last in [false, true] {
            let st = s.step();
            assert_eq!((st.prefill_tokens, st.decoding), (0, 1));
            assert!(close(st.duration, ms(11.0)));
            assert_eq!(
                st.emissions,
                [Emission {
                    id: 1,
                    tokens: 1,
                    finished: last
                }]
            );
        }
        assert!(s.is_idle());
        assert_eq!(s.kv_used(), 0);
        assert_eq!(s.step(), Step::default());
    }

    #[test]
    fn decode_and_prefill_share_a_step() {
        let mut s = Scheduler::new(
            simple(),
            Limits {
                max_batch_size: 8,
                max_num_tokens: 100,
                kv_capacity_tokens: 1000,
            },
        );
        s.submit(spec(1, 10, 5)).unwrap();
        s.step(); // prefill of 1
        s.submit(spec(2, 50, 5)).unwrap();
        let st = s.step();
        assert_eq!((st.decoding, st.prefill_tokens), (1, 50));
        // 10 base + 1 decoding + 50 tokens at 1000/s
        assert!(close(st.duration, ms(61.0)));
        let ids: Vec<u64> = st.emissions.iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 2]);
    }

    #[test]
    fn batch_size_limits_admission_and_the_rest_queue() {
        let mut s = Scheduler::new(
            simple(),
            Limits {
                max_batch_size: 2,
                max_num_tokens: 1000,
                kv_capacity_tokens: 1000,
            },
        );
        for id in 1..=3 {
            s.submit(spec(id, 10, 2)).unwrap();
        }
        let st = s.step();
        assert_eq!((s.running(), s.waiting()), (2, 1));
        assert_eq!(st.prefill_tokens, 20);
        s.step(); // both finish
        assert_eq!((s.running(), s.waiting()), (0, 1));
        let st = s.step();
        assert_eq!(st.prefill_tokens, 10);
    }

    #[test]
    fn full_kv_cache_queues_until_space_is_released() {
        let mut s = Scheduler::new(
            simple(),
            Limits {
                max_batch_size: 8,
                max_num_tokens: 1000,
                kv_capacity_tokens: 30,
            },
        );
        s.submit(spec(1, 10, 10)).unwrap(); // reserves 20
        s.submit(spec(2, 5, 10)).unwrap(); // needs 15: waits
        s.submit(spec(3, 1, 1)).unwrap(); // would fit, but FIFO keeps it behind 2
        s.step();
        assert_eq!((s.running(), s.waiting(), s.kv_used()), (1, 2, 20));
        while s.running() > 0 {
            s.step();
        }
        assert_eq!(
            (s.waiting(), s.kv_used()),
            (2, 0),
            "1 finished and released its 20"
        );
        let st = s.step();
        assert_eq!(st.prefill_tokens, 6, "2 and 3 admitted together");
        assert_eq!(s.kv_used(), 15, "3 finished in that step, 2 still holds 15");
        assert_eq!(
            s.submit(spec(9, 30, 1)),
            Err(AdmitError::TooLarge {
                need: 31,
                capacity: 30
            })
        );
    }

    #[test]
    fn a_handoff_skips_prefill_and_emits_two_tokens_first() {
        let mut s = Scheduler::new(simple(), Limits::default());
        s.submit(SeqSpec {
            id: 7,
            prompt_tokens: 1000,
            output_tokens: 3,
            handoff: true,
            prefix: None,
        })
        .unwrap();
        let st = s.step();
        assert_eq!((st.prefill_tokens, st.decoding), (0, 1));
        assert!(close(st.duration, ms(11.0)));
        assert_eq!(
            st.emissions,
            [Emission {
                id: 7,
                tokens: 2,
                finished: false
            }]
        );
        assert_eq!(
            s.step().emissions,
            [Emission {
                id: 7,
                tokens: 1,
                finished: true
            }]
        );
        assert_eq!(simple().transfer_time(1000), Duration::from_secs(1));
    }

    #[test]
    fn a_context_leg_finishes_with_its_first_token() {
        let mut s = Scheduler::new(simple(), Limits::default());
        s.submit(spec(1, 200, 1)).unwrap();
        let st = s.step();
        assert!(close(st.duration, ms(210.0)));
        assert_eq!(
            st.emissions,
            [Emission {
                id: 1,
                tokens: 1,
                finished: true
            }]
        );
        assert!(s.is_idle());
    }

    #[test]
    fn cancel_frees_slot_and_kv_at_once() {
        let mut s = Scheduler::new(simple(), Limits::default());
        s.submit(spec(1, 10, 100)).unwrap();
        s.submit(spec(2, 10, 100)).unwrap();
        s.step();
        assert_eq!(s.kv_used(), 220);
        assert!(s.cancel(1));
        assert_eq!((s.running(), s.kv_used()), (1, 110));
        assert!(!s.cancel(1));
    }

    /// A prompt of `len` tokens starting with `shared` tokens common to every prompt of `group`.
    fn prompt_spec(id: u64, group: u32, len: u32, shared: u32, tpb: u32) -> SeqSpec {
        let tokens: Vec<u32> = (0..len)
            .map(|i| {
                if i < shared {
                    group * 100_000 + i
                } else {
                    id as u32 * 1000 + i
                }
            })
            .collect();
        SeqSpec {
            prefix: Some(Arc::new(PromptBlocks {
                hashes: disagg_protocol::kv_cache::full_block_hashes(&tokens, tpb),
                tokens,
            })),
            ..spec(id, len, 2)
        }
    }

    fn cached(tpb: u32, capacity: u64) -> Scheduler {
        Scheduler::new(
            simple(),
            Limits {
                max_batch_size: 8,
                max_num_tokens: 10_000,
                kv_capacity_tokens: capacity,
            },
        )
        .with_cache(CacheSettings {
            tokens_per_block: tpb,
            enable_block_reuse: true,
            event_buffer_max_size: 16,
        })
    }

    fn run_to_end(s: &mut Scheduler) -> Vec<Step> {
        let mut steps = Vec::new();
        while !s.is_idle() {
            steps.push(s.step());
        }
        steps
    }

    #[test]
    fn a_cached_prefix_skips_its_prefill_cost() {
        let mut s = cached(16, 10_000);
        s.submit(prompt_spec(1, 7, 200, 160, 16)).unwrap();
        let first = s.step();
        assert_eq!(first.prefill_tokens, 200);
        assert!(close(first.duration, ms(210.0)), "{:?}", first.duration);
        run_to_end(&mut s);
        // 199 keyed tokens: 12 full blocks, the 10 of the shared 160 tokens are reused.
        s.submit(prompt_spec(2, 7, 200, 160, 16)).unwrap();
        let second = s.step();
        assert_eq!(second.admitted, [(2, 160)]);
        assert_eq!(second.prefill_tokens, 40, "only the uncached suffix");
        assert!(close(second.duration, ms(50.0)), "{:?}", second.duration);
        assert_eq!(
            second.emissions[0].tokens, 1,
            "the first token after the short prefill"
        );
        let stats = s.cache_stats();
        assert_eq!((stats.reused_blocks, stats.missed_blocks), (10, 14));
        assert_eq!((stats.hit_tokens, stats.query_tokens), (160, 400));
        // Another group shares nothing.
        run_to_end(&mut s);
        s.submit(prompt_spec(3, 8, 200, 160, 16)).unwrap();
        assert_eq!(s.step().prefill_tokens, 200);
    }

    #[test]
    fn block_reuse_off_reuses_nothing() {
        let mut s = cached(16, 10_000).with_cache(CacheSettings {
            tokens_per_block: 16,
            enable_block_reuse: false,
            event_buffer_max_size: 16,
        });
        for id in 1..=2 {
            s.submit(prompt_spec(id, 7, 200, 160, 16)).unwrap();
            assert_eq!(s.step().prefill_tokens, 200);
            run_to_end(&mut s);
        }
        assert!(s.take_events().is_empty());
        assert_eq!(s.kv_cached_free(), 0);
    }

    #[test]
    fn cached_blocks_give_way_least_recently_used_first() {
        // 64 tokens: room for one prompt's 3 full blocks (48) plus a running sequence's rest.
        let mut s = cached(16, 64);
        s.submit(prompt_spec(1, 1, 50, 48, 16)).unwrap();
        run_to_end(&mut s);
        assert_eq!((s.kv_used(), s.kv_cached_free()), (0, 48));
        assert!(
            matches!(&s.take_events()[..], [KvCacheEventData::Stored { blocks, .. }] if blocks.len() == 3)
        );
        // A repeat uses the cached blocks and needs only 50 + 2 - 48 more.
        s.submit(prompt_spec(2, 1, 50, 48, 16)).unwrap();
        let st = s.step();
        assert_eq!(st.prefill_tokens, 2);
        assert_eq!(s.kv_used(), 52);
        run_to_end(&mut s);
        // Another group needs 52 tokens: the three cached blocks must go (52 + 16 > 64).
        s.submit(prompt_spec(3, 2, 50, 48, 16)).unwrap();
        assert_eq!(s.step().prefill_tokens, 50);
        let events = s.take_events();
        assert!(
            matches!(&events[0], KvCacheEventData::Removed { block_hashes } if block_hashes.len() == 3),
            "{events:?}"
        );
        run_to_end(&mut s);
        assert!(s.kv_used() == 0 && s.kv_cached_free() <= 64);
    }

    #[test]
    fn a_handoff_stores_its_blocks_at_once_and_cancel_keeps_them_cached() {
        let mut s = cached(16, 10_000);
        let mut h = prompt_spec(1, 3, 100, 96, 16);
        h.handoff = true;
        h.output_tokens = 50;
        s.submit(h).unwrap();
        s.step();
        assert_eq!(s.kv_used(), 150);
        assert!(s.cancel(1));
        assert_eq!((s.kv_used(), s.kv_cached_free()), (0, 96));
        s.submit(prompt_spec(2, 3, 100, 96, 16)).unwrap();
        assert_eq!(
            s.step().prefill_tokens,
            4,
            "99 keyed tokens: 6 blocks of 16 cached"
        );
    }

    #[test]
    fn tensor_parallel_scales_prefill_and_zero_cost_is_free() {
        let mut c = simple();
        c.tensor_parallel = 4;
        assert!(close(c.step_time(0, 400), ms(110.0)));
        assert_eq!(CostModel::zero().step_time(100, 10_000), Duration::ZERO);
        assert_eq!(CostModel::zero().transfer_time(10_000), Duration::ZERO);
    }

    #[test]
    fn speculative_steps_emit_the_accepted_drafts_and_use_the_verify_budget() {
        // MTP with 3 drafts, 2 accepted: 3 tokens per decode step, 4 budget tokens per sequence.
        let limits = Limits {
            max_batch_size: 8,
            max_num_tokens: 9,
            kv_capacity_tokens: 1000,
        };
        let spec = Speculation {
            draft_len: 3,
            accepted: 2,
        };
        let mut s = Scheduler::new(CostModel::zero(), limits).with_speculation(spec);
        for id in 1..=3 {
            s.submit(SeqSpec {
                id,
                prompt_tokens: 1,
                output_tokens: 8,
                handoff: true,
                prefix: None,
            })
            .unwrap();
        }
        // A hand-off's first step: the context's token and 3 decoded ones; the third sequence
        // waits (9 budget tokens cover two 4-token verifications).
        let st = s.step();
        assert_eq!(st.decoding, 2);
        let tokens: Vec<u32> = st.emissions.iter().map(|e| e.tokens).collect();
        assert_eq!(tokens, [4, 4]);
        let st = s.step();
        assert_eq!(
            st.emissions
                .iter()
                .map(|e| (e.id, e.tokens))
                .collect::<Vec<_>>(),
            [(1, 3), (2, 3)]
        );
        // 7 of 8 emitted: the last step emits what is left, still verifying 3 drafts.
        let st = s.step();
        assert_eq!(
            st.emissions
                .iter()
                .map(|e| (e.id, e.tokens, e.finished))
                .collect::<Vec<_>>(),
            [(1, 1, true), (2, 1, true)]
        );
        let st = s.step();
        assert_eq!(
            st.emissions
                .iter()
                .map(|e| (e.id, e.tokens, e.finished))
                .collect::<Vec<_>>(),
            [(3, 4, false)]
        );
        // More accepted than drafted is capped.
        let capped = Scheduler::new(CostModel::zero(), limits).with_speculation(Speculation {
            draft_len: 1,
            accepted: 5,
        });
        assert_eq!(capped.speculation.accepted, 1);
    }

    #[test]
    fn an_iteration_logs_as_the_pytorch_executor_does() {
        let limits = Limits {
            max_batch_size: 8,
            max_num_tokens: 64,
            kv_capacity_tokens: 1000,
        };
        let mut s = Scheduler::new(simple(), limits).with_speculation(Speculation {
            draft_len: 1,
            accepted: 1,
        });
        s.submit(spec(1, 10, 8)).unwrap();
        let first = s.step();
        s.submit(spec(2, 20, 8)).unwrap();
        let second = s.step();
        // Step 2: sequence 1 decodes (2 tokens through the model), sequence 2 prefills 20.
        assert_eq!(
            (second.decoding, second.prefilling, second.generation_tokens),
            (1, 1, 2)
        );
        assert_eq!(
            second.iteration_log(7, Some(first.duration)),
            "iter = 7, global_rank = 0, rank = 0, host_step_time = 31.00ms, \
             prev_device_step_time = 20.00ms, num_scheduled_requests = 2, states = \
             {'num_ctx_requests': 1, 'num_ctx_tokens': 20, 'num_generation_tokens': 2}"
        );
        assert!(
            first
                .iteration_log(0, None)
                .contains("prev_device_step_time = N/A,")
        );
    }
}
