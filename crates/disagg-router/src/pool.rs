//! Worker pools: health, load, and which worker takes the next request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// How a pool picks a worker: the policy named in the coordinator config, one type from config
/// to router.
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
}

impl Worker {
    fn new(addr: &str) -> Worker {
        Worker {
            addr: addr.to_string(),
            base: format!("http://{addr}"),
            healthy: AtomicBool::new(false),
            ever_healthy: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            tokens_in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
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

/// A request's hold on a worker; dropping it releases the load.
#[derive(Debug)]
pub struct Lease {
    /// The worker's index in its pool.
    pub index: usize,
    /// The worker.
    pub worker: Arc<Worker>,
    tokens: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.worker.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.worker
            .tokens_in_flight
            .fetch_sub(self.tokens, Ordering::Relaxed);
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
}

impl Pool {
    /// A pool of `addrs`.
    pub fn new(role: &'static str, addrs: &[String], policy: Policy) -> Pool {
        Pool {
            role,
            workers: addrs.iter().map(|a| Arc::new(Worker::new(a))).collect(),
            policy,
            next: AtomicUsize::new(0),
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
        let n = self.workers.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let candidates = (0..n)
            .map(|k| (start + k) % n)
            .filter(|i| !tried.contains(i) && self.workers[*i].is_healthy());
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
        };
        let worker = self.workers[index].clone();
        worker.in_flight.fetch_add(1, Ordering::Relaxed);
        worker.tokens_in_flight.fetch_add(tokens, Ordering::Relaxed);
        worker.requests.fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            index,
            worker,
            tokens,
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
