//! The simulated engine's reusable KV blocks: a table of full prompt blocks keyed by their
//! chained hash ([`disagg_protocol::kv_cache`]), each referenced by the running sequences that
//! use it; a block nobody references stays cached until space is needed, and then the least
//! recently used goes first (a block's children before the block, so a cached prefix never has
//! a hole). Pure: no clock (a counter orders uses), no I/O; it records the KV cache events a
//! worker publishes.
//!
//! Upstream's settings (`kv_cache_config`): `tokens_per_block` (32), `enable_block_reuse`
//! (true; false: no block is ever reused or published), `event_buffer_max_size` (0: no events).

use std::collections::{BTreeSet, HashMap};

use disagg_protocol::kv_cache::{DEFAULT_TOKENS_PER_BLOCK, KvCacheEventData, StoredBlock};

/// How a worker keeps and publishes its KV blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Tokens per block.
    pub tokens_per_block: u32,
    /// Whether full prompt blocks are kept for later requests.
    pub enable_block_reuse: bool,
    /// Most KV cache events kept for `/kv_cache_events` (the oldest go first); 0: none.
    pub event_buffer_max_size: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            tokens_per_block: DEFAULT_TOKENS_PER_BLOCK,
            enable_block_reuse: true,
            event_buffer_max_size: 0,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    refs: u32,
    /// Position in its prompt (0 = first block): children are evicted before parents.
    depth: u32,
    last_use: u64,
}

/// Counters of lookups, as upstream's `kv_cache_metrics` count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Prompt blocks found in the cache.
    pub reused_blocks: u64,
    /// Prompt blocks that had to be computed.
    pub missed_blocks: u64,
    /// Prompt tokens looked up (every token of every prefilled prompt).
    pub query_tokens: u64,
    /// Prompt tokens whose KV came from the cache.
    pub hit_tokens: u64,
    /// Blocks evicted.
    pub evicted_blocks: u64,
}

/// The table of reusable blocks.
#[derive(Debug, Clone)]
pub struct PrefixCache {
    settings: CacheSettings,
    entries: HashMap<u64, Entry>,
    /// Unreferenced blocks, oldest use first, deepest first among equals.
    free: BTreeSet<(u64, std::cmp::Reverse<u32>, u64)>,
    referenced: usize,
    clock: u64,
    events: Vec<KvCacheEventData>,
    stats: CacheStats,
}

impl PrefixCache {
    /// An empty table.
    pub fn new(settings: CacheSettings) -> PrefixCache {
        PrefixCache {
            settings,
            entries: HashMap::new(),
            free: BTreeSet::new(),
            referenced: 0,
            clock: 0,
            events: Vec::new(),
            stats: CacheStats::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> CacheSettings {
        self.settings
    }

    /// Tokens per block.
    pub fn block_tokens(&self) -> u64 {
        u64::from(self.settings.tokens_per_block.max(1))
    }

    /// How many leading blocks of `prefix` are cached.
    pub fn lookup(&self, prefix: &[u64]) -> usize {
        if !self.settings.enable_block_reuse {
            return 0;
        }
        prefix
            .iter()
            .take_while(|h| self.entries.contains_key(h))
            .count()
    }

    /// Blocks held in the table (referenced or not).
    pub fn blocks(&self) -> usize {
        self.entries.len()
    }

    /// Blocks some running sequence uses.
    pub fn referenced_blocks(&self) -> usize {
        self.referenced
    }

    /// Unreferenced blocks among `prefix`'s first `n` (they stop being evictable once used).
    pub fn free_among(&self, prefix: &[u64], n: usize) -> usize {
        prefix[..n]
            .iter()
            .filter(|h| self.entries.get(h).is_some_and(|e| e.refs == 0))
            .count()
    }

    /// Blocks that could be evicted now.
    pub fn evictable(&self) -> usize {
        self.free.len()
    }

    /// Take a reference on each of `hashes` (all cached).
    pub fn acquire(&mut self, hashes: &[u64]) {
        for h in hashes {
            if let Some(e) = self.entries.get_mut(h) {
                if e.refs == 0 {
                    self.free
                        .remove(&(e.last_use, std::cmp::Reverse(e.depth), *h));
                    self.referenced += 1;
                }
                e.refs += 1;
            }
        }
    }

    /// Drop a reference on each of `hashes`; unreferenced blocks stay cached, most recently
    /// used now.
    pub fn release(&mut self, hashes: &[u64]) {
        self.clock += 1;
        for h in hashes {
            if let Some(e) = self.entries.get_mut(h) {
                e.refs = e.refs.saturating_sub(1);
                e.last_use = self.clock;
                if e.refs == 0 {
                    self.referenced -= 1;
                    self.free
                        .insert((e.last_use, std::cmp::Reverse(e.depth), *h));
                }
            }
        }
    }

    /// Record a lookup's outcome for a prompt of `prompt_tokens` of which `prefix` blocks were
    /// full and `hit` of them cached.
    pub fn count_lookup(&mut self, prompt_tokens: u32, prefix: usize, hit: usize) {
        self.stats.reused_blocks += hit as u64;
        self.stats.missed_blocks += (prefix - hit) as u64;
        self.stats.query_tokens += u64::from(prompt_tokens);
        self.stats.hit_tokens += hit as u64 * self.block_tokens();
    }

    /// Add the blocks of a prefilled prompt from position `from` on (the ones before are held
    /// already), each referenced once. `tokens(i)` gives block `i`'s tokens for the event.
    /// Returns the hashes added: a block another sequence added meanwhile is not, and neither
    /// is any after it (the caller keeps those private).
    pub fn insert(
        &mut self,
        prefix: &[u64],
        from: usize,
        tokens: impl Fn(usize) -> Vec<u32>,
    ) -> Vec<u64> {
        if !self.settings.enable_block_reuse {
            return Vec::new();
        }
        let mut added = Vec::new();
        let mut blocks = Vec::new();
        for (i, h) in prefix.iter().enumerate().skip(from) {
            if self.entries.contains_key(h) {
                break;
            }
            self.entries.insert(
                *h,
                Entry {
                    refs: 1,
                    depth: i as u32,
                    last_use: self.clock,
                },
            );
            self.referenced += 1;
            added.push(*h);
            blocks.push(StoredBlock::new(*h, &tokens(i)));
        }
        if !blocks.is_empty() {
            self.events.push(KvCacheEventData::Stored {
                parent_hash: from.checked_sub(1).map(|p| prefix[p]),
                blocks,
            });
        }
        added
    }

    /// Evict up to `n` unreferenced blocks, least recently used (and deepest) first; returns how
    /// many went.
    pub fn evict(&mut self, n: usize) -> usize {
        let mut gone = Vec::new();
        while gone.len() < n {
            let Some(first) = self.free.pop_first() else {
                break;
            };
            self.entries.remove(&first.2);
            gone.push(first.2);
        }
        if !gone.is_empty() {
            self.stats.evicted_blocks += gone.len() as u64;
            let count = gone.len();
            self.events
                .push(KvCacheEventData::Removed { block_hashes: gone });
            return count;
        }
        0
    }

    /// The events recorded since the last call.
    pub fn take_events(&mut self) -> Vec<KvCacheEventData> {
        std::mem::take(&mut self.events)
    }

    /// The lookup counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> PrefixCache {
        PrefixCache::new(CacheSettings {
            tokens_per_block: 4,
            ..CacheSettings::default()
        })
    }

    #[test]
    fn inserted_blocks_are_found_and_published() {
        let mut c = cache();
        assert_eq!(c.lookup(&[1, 2, 3]), 0);
        assert_eq!(c.insert(&[1, 2, 3], 0, |i| vec![i as u32; 4]), [1, 2, 3]);
        assert_eq!(c.lookup(&[1, 2, 9]), 2);
        assert_eq!(c.lookup(&[9, 2]), 0, "a match starts at the first block");
        assert_eq!(
            (c.blocks(), c.referenced_blocks(), c.evictable()),
            (3, 3, 0)
        );
        let events = c.take_events();
        assert!(
            matches!(&events[..], [KvCacheEventData::Stored { parent_hash: None, blocks }]
            if blocks.len() == 3 && blocks[2].tokens[0].token_id == 2)
        );
        assert_eq!(c.insert(&[1, 2, 3, 4], 3, |_| vec![0; 4]), [4]);
        assert!(matches!(
            &c.take_events()[..],
            [KvCacheEventData::Stored {
                parent_hash: Some(3),
                ..
            }]
        ));
    }

    #[test]
    fn unreferenced_blocks_go_least_recently_used_and_children_first() {
        let mut c = cache();
        c.insert(&[1, 2], 0, |_| vec![0; 4]);
        c.insert(&[5, 6], 0, |_| vec![0; 4]);
        c.release(&[1, 2]);
        c.release(&[5, 6]);
        assert_eq!((c.referenced_blocks(), c.evictable()), (0, 4));
        c.take_events();
        assert_eq!(c.evict(1), 1);
        assert_eq!(c.lookup(&[1, 2]), 1, "the child went before its parent");
        assert_eq!(c.evict(1), 1);
        assert_eq!(c.lookup(&[5, 6]), 2, "the newer prompt stays");
        assert_eq!(
            c.take_events(),
            [
                KvCacheEventData::Removed {
                    block_hashes: vec![2]
                },
                KvCacheEventData::Removed {
                    block_hashes: vec![1]
                }
            ]
        );
        c.acquire(&[5]);
        assert_eq!(c.free_among(&[5, 6], 2), 1);
        assert_eq!(c.evict(5), 1, "a referenced block is never evicted");
        assert_eq!(c.lookup(&[5, 6]), 1);
        assert_eq!(c.stats().evicted_blocks, 3);
    }

    #[test]
    fn without_block_reuse_nothing_is_kept() {
        let mut c = PrefixCache::new(CacheSettings {
            enable_block_reuse: false,
            ..CacheSettings::default()
        });
        assert!(c.insert(&[1, 2], 0, |_| Vec::new()).is_empty());
        assert_eq!(c.lookup(&[1, 2]), 0);
        assert!(c.take_events().is_empty());
    }
}
