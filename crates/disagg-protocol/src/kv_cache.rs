//! KV-cache block hashes and KV cache events as TensorRT-LLM's workers publish them and its
//! `kv_cache_aware` router reads them, so the simulator and the router speak the same blocks as
//! real workers do.
//!
//! - A prompt's blocks: the prompt without its last token, cut into `tokens_per_block` pieces
//!   (upstream's router: "in KvCacheManager, the last token is not included in the block key");
//!   each block's hash chains over its parent's ([`block_hashes`]).
//! - The hash is upstream's `v1_block_key` (`tensorrt_llm/runtime/kv_cache_hash.py`, the C++
//!   `BlockKeyHasher`): a seed of `len(tokens) ^ parent × 0xBF58476D1CE4E5B9`, then each token
//!   mixed in with a 32-bit integer hash and a `hash_combine` step ([`block_key_hash`]).
//! - Events (`POST /kv_cache_events` on a worker drains them): `{"event_id", "data",
//!   "window_size"}` with `data` one of `created`, `stored` (blocks with `block_hash` and their
//!   tokens), `removed` (`block_hashes`) — the JSON of upstream's `KVCacheEventSerializer`
//!   (`tensorrt_llm/_utils.py`).
//!
//! ```
//! use disagg_protocol::kv_cache::{block_hashes, block_key_hash};
//! let prompt: Vec<u32> = (0..65).collect();
//! let blocks = block_hashes(&prompt, 32);
//! assert_eq!(blocks.len(), 2, "64 tokens without the last one: two full blocks");
//! assert_eq!(blocks[1], block_key_hash(&prompt[32..64], blocks[0]));
//! ```

use serde::{Deserialize, Serialize};

/// Upstream's default block size (`KvCacheConfig.tokens_per_block`, and the router's default).
pub const DEFAULT_TOKENS_PER_BLOCK: u32 = 32;

/// The name upstream gives this hash (`kv_cache_hash_algo` in a worker's `/server_info`).
pub const HASH_ALGO_V1: &str = "v1_block_key";

const PARENT_MUL: u64 = 0xBF58_476D_1CE4_E5B9;
const MIX32: u32 = 0x045D_9F3B;
const GOLDEN: u32 = 0x9E37_79B9;

/// Upstream's `v1_block_key` hash of one block's tokens under its parent's hash (0 for the
/// first block).
pub fn block_key_hash(tokens: &[u32], parent: u64) -> u64 {
    let mut seed = (tokens.len() as u64) ^ parent.wrapping_mul(PARENT_MUL);
    for &token in tokens {
        let mut v = token;
        v = ((v >> 16) ^ v).wrapping_mul(MIX32);
        v = ((v >> 16) ^ v).wrapping_mul(MIX32);
        v = (v >> 16) ^ v;
        // The C++ adds the constant in 32 bits before widening to size_t.
        let v = u64::from(v.wrapping_add(GOLDEN));
        seed ^= v.wrapping_add(seed << 6).wrapping_add(seed >> 2);
    }
    seed
}

/// The chained hashes of a prompt's blocks as upstream's router computes them: over the prompt
/// without its last token, `tokens_per_block` tokens each, the last block possibly partial.
pub fn block_hashes(prompt: &[u32], tokens_per_block: u32) -> Vec<u64> {
    let keyed = &prompt[..prompt.len().saturating_sub(1)];
    let mut out: Vec<u64> = Vec::with_capacity(keyed.len().div_ceil(tokens_per_block as usize));
    for block in keyed.chunks(tokens_per_block.max(1) as usize) {
        let parent = out.last().copied().unwrap_or(0);
        out.push(block_key_hash(block, parent));
    }
    out
}

/// The hashes of the prompt's full blocks only: what a worker can store and reuse.
pub fn full_block_hashes(prompt: &[u32], tokens_per_block: u32) -> Vec<u64> {
    let full = prompt.len().saturating_sub(1) / tokens_per_block.max(1) as usize;
    let mut hashes = block_hashes(prompt, tokens_per_block);
    hashes.truncate(full);
    hashes
}

/// One KV cache event, as a worker's `/kv_cache_events` lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvCacheEvent {
    /// Increasing per worker.
    pub event_id: u64,
    /// What happened.
    pub data: KvCacheEventData,
    /// The attention window the blocks belong to.
    pub window_size: u32,
}

/// What a KV cache event reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KvCacheEventData {
    /// The cache was created: its blocks per level (device, host).
    Created {
        /// Blocks per cache level.
        num_blocks_per_cache_level: Vec<u64>,
    },
    /// Blocks became reusable, each the child of the previous (the first of `parent_hash`).
    Stored {
        /// The parent of the first block, if it is not the first block of a prompt.
        parent_hash: Option<u64>,
        /// The blocks, in prompt order.
        blocks: Vec<StoredBlock>,
    },
    /// Blocks were evicted.
    Removed {
        /// Their hashes.
        block_hashes: Vec<u64>,
    },
}

/// A block of a `stored` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredBlock {
    /// Always `stored_block`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its chained hash.
    pub block_hash: u64,
    /// Its tokens.
    pub tokens: Vec<UniqueToken>,
    /// 0 = device memory.
    pub cache_level: u32,
    /// Retention priority (upstream's default 35).
    pub priority: i32,
}

/// A token of a stored block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UniqueToken {
    /// Always `unique_token`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The token id.
    pub token_id: u32,
    /// Extra id (multimodal); 0 for text.
    pub token_extra_id: u64,
}

impl StoredBlock {
    /// A device block of text tokens at upstream's default priority.
    pub fn new(block_hash: u64, tokens: &[u32]) -> StoredBlock {
        StoredBlock {
            kind: "stored_block".into(),
            block_hash,
            tokens: tokens
                .iter()
                .map(|&token_id| UniqueToken {
                    kind: "unique_token".into(),
                    token_id,
                    token_extra_id: 0,
                })
                .collect(),
            cache_level: 0,
            priority: 35,
        }
    }
}

/// What a router learns from a batch of events: block hashes to add and to drop, in order.
/// Read leniently from JSON, as upstream's router does (`{"data": {...}}` or the bare event;
/// unknown event types and string hashes of other algorithms are skipped).
pub fn block_updates(events: &serde_json::Value) -> Vec<BlockUpdate> {
    let mut out = Vec::new();
    for raw in events.as_array().map(Vec::as_slice).unwrap_or_default() {
        let event = raw.get("data").unwrap_or(raw);
        match event.get("type").and_then(serde_json::Value::as_str) {
            Some("stored") => {
                let blocks = event["blocks"].as_array().map(Vec::as_slice);
                out.extend(
                    blocks
                        .unwrap_or_default()
                        .iter()
                        .filter_map(|b| b["block_hash"].as_u64())
                        .map(BlockUpdate::Stored),
                );
            }
            Some("removed") => {
                let hashes = event["block_hashes"].as_array().map(Vec::as_slice);
                out.extend(
                    hashes
                        .unwrap_or_default()
                        .iter()
                        .filter_map(serde_json::Value::as_u64)
                        .map(BlockUpdate::Removed),
                );
            }
            _ => {}
        }
    }
    out
}

/// One change to a worker's known blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockUpdate {
    /// The worker holds this block now.
    Stored(u64),
    /// The worker evicted it.
    Removed(u64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_upstreams_v1_block_key() {
        // Values from upstream's `hash_v1_block_key` (kv_cache_hash.py), run by hand.
        assert_eq!(block_key_hash(&[], 0), 0);
        assert_eq!(block_key_hash(&[1, 2, 3], 0), 0x0d09_0f5c_6916);
        assert_eq!(
            block_key_hash(&[1, 2, 3], 0x0d09_0f5c_6916),
            0x3a20_41a4_be5e_5f71
        );
        assert_eq!(
            block_key_hash(&[u32::MAX, 0, 70_000], 7),
            0x9f41_ca56_ee97_18a5
        );
    }

    #[test]
    fn blocks_chain_and_leave_out_the_last_token() {
        let prompt: Vec<u32> = (100..200).collect();
        let all = block_hashes(&prompt, 32);
        assert_eq!(all.len(), 4, "99 keyed tokens: 3 full blocks and one of 3");
        assert_eq!(all[0], block_key_hash(&prompt[..32], 0));
        assert_eq!(all[3], block_key_hash(&prompt[96..99], all[2]));
        assert_eq!(full_block_hashes(&prompt, 32), all[..3]);
        let mut other = prompt.clone();
        other[40] = 7;
        let changed = block_hashes(&other, 32);
        assert_eq!(changed[0], all[0], "a shared first block");
        assert!(changed[1..].iter().zip(&all[1..]).all(|(a, b)| a != b));
        assert!(block_hashes(&[5], 32).is_empty());
        assert!(full_block_hashes(&prompt[..32], 32).is_empty());
    }

    #[test]
    fn events_serialize_as_upstream_and_read_back() {
        let stored = KvCacheEvent {
            event_id: 3,
            data: KvCacheEventData::Stored {
                parent_hash: None,
                blocks: vec![StoredBlock::new(11, &[1, 2])],
            },
            window_size: 4096,
        };
        let removed = KvCacheEvent {
            event_id: 4,
            data: KvCacheEventData::Removed {
                block_hashes: vec![11, u64::MAX],
            },
            window_size: 4096,
        };
        let json = serde_json::to_value([&stored, &removed]).unwrap();
        assert_eq!(json[0]["data"]["type"], "stored");
        assert_eq!(json[0]["data"]["blocks"][0]["type"], "stored_block");
        assert_eq!(json[0]["data"]["blocks"][0]["tokens"][1]["token_id"], 2);
        assert_eq!(json[1]["data"]["block_hashes"][1], u64::MAX);
        assert_eq!(
            block_updates(&json),
            [
                BlockUpdate::Stored(11),
                BlockUpdate::Removed(11),
                BlockUpdate::Removed(u64::MAX)
            ]
        );
        let bare = serde_json::json!([{"type": "created", "num_blocks_per_cache_level": [8, 0]},
            {"type": "stored", "blocks": [{"block_hash": "ab12"}, {"block_hash": 5}]}, "junk"]);
        assert_eq!(block_updates(&bare), [BlockUpdate::Stored(5)]);
        assert!(block_updates(&serde_json::json!({"not": "a list"})).is_empty());
    }
}
