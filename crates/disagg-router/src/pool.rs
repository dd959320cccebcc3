//! Worker pools: health, load, and which worker takes the next request.
//!
//! `kv_cache_aware` is upstream's `KvCacheAwareRouter` (`tensorrt_llm/serve/router.py`): each
//! worker's score is `matched / padded − in_flight / max_batch_size`, where `matched` counts the
//! prompt's leading blocks the worker is known to hold (× `tokens_per_block`) and `padded` is
//! the prompt's blocks × `tokens_per_block`; the best score wins, ties in turn. A worker's
//! blocks are learnt from its KV cache events (`POST /kv_cache_events`), polled after each
//! request it finished (see [`crate::Router::run`]).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use disagg_protocol::kv_cache::BlockUpdate;
use tokio::sync::Notify;

/// How a pool picks a worker: the policy named in the coordinator config, one type from config
/// to router.
pub use disagg_config::KvAwareArgs;
pub use disagg_config::RouterPolicy as Policy;

/// One worker.
#[derive(Debug)]
pub struct Worker {
    /// `host:port`.
    pub addr: String,
    /// `http://host:port`.
    pub base: String,
    healthy: AtomicBool,
    ever_healthy: AtomicBool,
    in_flight: AtomicU64,
    tokens_in_flight: AtomicU64,
    /// Requests sent.
    pub requests: AtomicU64,
    /// Requests that failed (connection or 5xx).
    pub failures: AtomicU64,
    /// Blocks the worker holds, as its KV cache events told (kv_cache_aware only).
    blocks: Mutex<HashSet<u64>>,
    /// A request finished here since its events were last read.
    events_due: AtomicBool,
    /// Wakes the pool's event poller.
    poll: Arc<Notify>,
}

impl Worker {
    fn new(addr: &str, poll: Arc<Notify>) -> Worker {
        Worker {
            addr: addr.to_string(),
            base: format!("http://{addr}"),
            healthy: AtomicBool::new(false),
            ever_healthy: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            tokens_in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            blocks: Mutex::new(HashSet::new()),
            events_due: AtomicBool::new(false),
            poll,
        }
    }

    /// Apply what the worker's KV cache events said.
    pub fn apply_events(&self, updates: &[BlockUpdate]) {
        if let Ok(mut blocks) = self.blocks.lock() {
            for u in updates {
                match u {
                    BlockUpdate::Stored(h) => blocks.insert(*h),
                    BlockUpdate::Removed(h) => blocks.remove(h),
                };
            }
        }
    }

    /// Count `hashes` as held (upstream's `backfill_block_hashes_on_finish`).
    pub fn add_blocks(&self, hashes: &[u64]) {
        if let Ok(mut blocks) = self.blocks.lock() {
            blocks.extend(hashes.iter().copied());
        }
    }

    /// Leading blocks of `hashes` the worker holds.
    pub fn matched_blocks(&self, hashes: &[u64]) -> usize {
        self.blocks
            .lock()
            .map_or(0, |b| hashes.iter().take_while(|h| b.contains(h)).count())
    }

    /// Whether a request finished here since the events were last read (and clear it).
    pub fn take_events_due(&self) -> bool {
        self.events_due.swap(false, Ordering::AcqRel)
    }

    /// Whether it answered its last health check (and has not failed a request since).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Record a health-check result.
    pub fn set_healthy(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Release);
        if ok {
            self.ever_healthy.store(true, Ordering::Release);
        }
    }

    /// Whether it has ever been healthy.
    pub fn was_ever_healthy(&self) -> bool {
        self.ever_healthy.load(Ordering::Acquire)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request's hold on a worker; dropping it releases the load (and, in a kv_cache_aware pool,
/// has the worker's KV cache events read, as upstream's `finish_request` polls them).
#[derive(Debug)]
pub struct Lease {
    /// The worker's index in its pool.
    pub index: usize,
    /// The worker.
    pub worker: Arc<Worker>,
    tokens: u64,
    /// Prompt tokens of the leading blocks the worker held when it was picked (kv_cache_aware).
    pub matched_tokens: u64,
    /// Blocks to count as held once the request is done (`backfill_block_hashes_on_finish`).
    backfill: Option<Arc<[u64]>>,
    kv_aware: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.worker.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.worker
            .tokens_in_flight
            .fetch_sub(self.tokens, Ordering::Relaxed);
        if let Some(hashes) = &self.backfill {
            self.worker.add_blocks(hashes);
        }
        if self.kv_aware {
            self.worker.events_due.store(true, Ordering::Release);
            self.worker.poll.notify_one();
        }
    }
}

/// A pool of workers of one role.
#[derive(Debug)]
pub struct Pool {
    /// `context` or `generation`.
    pub role: &'static str,
    /// The workers.
    pub workers: Vec<Arc<Worker>>,
    policy: Policy,
    next: AtomicUsize,
    /// Wakes the event poller when a kv_cache_aware worker finished a request.
    pub poll: Arc<Notify>,
}

impl Pool {
    /// A pool of `addrs`.
    pub fn new(role: &'static str, addrs: &[String], policy: Policy) -> Pool {
        let poll = Arc::new(Notify::new());
        Pool {
            role,
            workers: addrs
                .iter()
                .map(|a| Arc::new(Worker::new(a, poll.clone())))
                .collect(),
            policy,
            next: AtomicUsize::new(0),
            poll,
        }
    }

    /// The pool's policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The block size a kv_cache_aware pool hashes prompts with.
    pub fn tokens_per_block(&self) -> Option<u32> {
        match self.policy {
            Policy::KvCacheAware(a) => Some(a.tokens_per_block.max(1)),
            _ => None,
        }
    }

    /// Whether the pool has workers.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Whether at least one worker is healthy.
    pub fn any_healthy(&self) -> bool {
        self.workers.iter().any(|w| w.is_healthy())
    }

    /// Take a healthy worker not in `tried`, by the pool's policy; `None` when none is left.
    pub fn lease(&self, tried: &[usize], tokens: u64) -> Option<Lease> {
        self.lease_for(tried, tokens, None)
    }

    /// The same, for a prompt whose block hashes (at [`Pool::tokens_per_block`]) are `hashes`:
    /// a kv_cache_aware pool scores the workers by what they hold of it.
    pub fn lease_for(
        &self,
        tried: &[usize],
        tokens: u64,
        hashes: Option<&Arc<[u64]>>,
    ) -> Option<Lease> {
        let n = self.workers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !tried.contains(i) && self.workers[*i].is_healthy());
        let mut matched_tokens = 0;
        let mut backfill = None;
        let index = match self.policy {
            Policy::RoundRobin => candidates.into_iter().next()?,
            Policy::LoadBalancing { use_tokens } => candidates.min_by_key(|&i| {
                let w = &self.workers[i];
                if use_tokens {
                    w.tokens_in_flight.load(Ordering::Relaxed)
                } else {
                    w.in_flight.load(Ordering::Relaxed)
                }
            })?,
            Policy::KvCacheAware(args) => {
                let hashes: &[u64] = hashes.map_or(&[], |h| h);
                let block = u64::from(args.tokens_per_block.max(1));
                let padded = (hashes.len() as u64 * block).max(1) as f64;
                let scored: Vec<(usize, u64, f64)> = candidates
                    .map(|i| {
                        let w = &self.workers[i];
                        let matched = w.matched_blocks(hashes) as u64 * block;
                        let load = w.in_flight.load(Ordering::Relaxed) as f64;
                        let score =
                            matched as f64 / padded - load / f64::from(args.max_batch_size.max(1));
                        (i, matched, score)
                    })
                    .collect();
                let best = scored.iter().map(|s| s.2).fold(f64::NEG_INFINITY, f64::max);
                // Ties in turn: the candidates start at a rotating worker.
                let &(index, matched, _) = scored.iter().find(|s| s.2 == best)?;
                matched_tokens = matched;
                if args.backfill_block_hashes_on_finish && !hashes.is_empty() {
                    backfill = Some(Arc::from(hashes));
                }
                index
            }
        };
        let worker = self.workers[index].clone();
        worker.in_flight.fetch_add(1, Ordering::Relaxed);
        worker.tokens_in_flight.fetch_add(tokens, Ordering::Relaxed);
        worker.requests.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            index,
            worker,
            tokens,
            matched_tokens,
            backfill,
            kv_aware: matches!(self.policy, Policy::KvCacheAware(_)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, policy: Policy) -> Pool {
        let addrs: Vec<String> = (0..n).map(|i| format!("h:{}", 1000 + i)).collect();
        let p = Pool::new("generation", &addrs, policy);
        for w in &p.workers {
            w.set_healthy(true);
        }
        p
    }

    #[test]
    fn round_robin_takes_turns_and_skips_unhealthy_workers() {
        let p = pool(3, Policy::RoundRobin);
        let picks: Vec<usize> = (0..6).map(|_| p.lease(&[], 0).unwrap().index).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        p.workers[1].set_healthy(false);
        let picks: Vec<usize> = (0..4).map(|_| p.lease(&[], 0).unwrap().index).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        assert!(
            p.lease(&[0, 2], 0).is_none(),
            "tried workers are not picked again"
        );
    }

    #[test]
    fn load_balancing_prefers_the_least_busy() {
        let p = pool(3, Policy::LoadBalancing { use_tokens: false });
        let a = p.lease(&[], 0).unwrap();
        let b = p.lease(&[], 0).unwrap();
        assert_ne!(a.index, b.index);
        let c = p.lease(&[], 0).unwrap();
        let idle = 3 - a.index - b.index;
        assert_eq!(c.index, idle);
        drop(b);
        let d = p.lease(&[], 0).unwrap();
        assert_eq!(
            d.worker.in_flight(),
            1,
            "the released worker is the least busy"
        );
    }

    fn kv_pool(n: usize) -> Pool {
        pool(
            n,
            Policy::KvCacheAware(disagg_config::KvAwareArgs {
                max_batch_size: 4,
                tokens_per_block: 32,
                backfill_block_hashes_on_finish: false,
            }),
        )
    }

    #[test]
    fn kv_cache_aware_prefers_the_worker_holding_the_prefix_unless_it_is_too_busy() {
        let p = kv_pool(3);
        let hashes: Arc<[u64]> = Arc::from(&[1u64, 2, 3, 4][..]);
        p.workers[2].apply_events(&[
            BlockUpdate::Stored(1),
            BlockUpdate::Stored(2),
            BlockUpdate::Stored(3),
        ]);
        p.workers[1].apply_events(&[BlockUpdate::Stored(1)]);
        let a = p.lease_for(&[], 0, Some(&hashes)).unwrap();
        assert_eq!(
            (a.index, a.matched_tokens),
            (2, 96),
            "3 of 4 blocks: score 0.75"
        );
        // 0.75 - 1/4 = 0.5 still beats 0.25 (worker 1) and 0 (worker 0).
        let b = p.lease_for(&[], 0, Some(&hashes)).unwrap();
        assert_eq!(b.index, 2);
        // 0.75 - 2/4 = 0.25 ties worker 1's 0.25: taken in turn, both get picked over time.
        let c = p.lease_for(&[], 0, Some(&hashes)).unwrap();
        assert!(c.index == 1 || c.index == 2);
        let d = p.lease_for(&[], 0, Some(&hashes)).unwrap();
        assert_ne!(d.index, 0, "the idle worker without the prefix scores 0");
        p.workers[2].apply_events(&[BlockUpdate::Removed(2)]);
        assert_eq!(
            p.workers[2].matched_blocks(&hashes),
            1,
            "a hole ends the match"
        );
        assert_eq!(
            p.workers[2].matched_blocks(&[9, 1]),
            0,
            "matches start at the first block"
        );
    }

    #[test]
    fn kv_cache_aware_without_blocks_balances_load_and_finishing_asks_for_events() {
        let p = kv_pool(2);
        let a = p.lease_for(&[], 0, None).unwrap();
        let b = p.lease_for(&[], 0, None).unwrap();
        assert_ne!(a.index, b.index, "an empty prompt scores by load alone");
        assert!(!p.workers[a.index].take_events_due());
        drop(a);
        let w = &p.workers[(b.index + 1) % 2];
        assert!(
            w.take_events_due(),
            "a finished request has its worker's events read"
        );
        assert!(!w.take_events_due());
    }

    #[test]
    fn backfill_counts_a_finished_requests_blocks_as_held() {
        let p = pool(
            2,
            Policy::KvCacheAware(disagg_config::KvAwareArgs {
                backfill_block_hashes_on_finish: true,
                ..disagg_config::KvAwareArgs::default()
            }),
        );
        let hashes: Arc<[u64]> = Arc::from(&[7u64, 8][..]);
        let first = p.lease_for(&[], 0, Some(&hashes)).unwrap();
        let index = first.index;
        assert_eq!(p.workers[index].matched_blocks(&hashes), 0);
        drop(first);
        assert_eq!(p.workers[index].matched_blocks(&hashes), 2);
        assert_eq!(p.lease_for(&[], 0, Some(&hashes)).unwrap().index, index);
    }

    #[test]
    fn load_balancing_by_tokens() {
        let p = pool(2, Policy::LoadBalancing { use_tokens: true });
        let big = p.lease(&[], 10_000).unwrap();
        for _ in 0..5 {
            let l = p.lease(&[], 10).unwrap();
            assert_ne!(l.index, big.index);
        }
    }
}
