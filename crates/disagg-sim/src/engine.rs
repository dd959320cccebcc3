//! The async shell around the [`Scheduler`]: one task owns it, takes submissions and
//! cancellations from a channel, sleeps for each step's duration on absolute time (so small
//! per-step overheads do not accumulate into drift), and hands each sequence its tokens.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use disagg_protocol::kv_cache::{KvCacheEvent, KvCacheEventData};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::scheduler::{AdmitError, Scheduler, SeqSpec};

/// Tokens for one sequence from one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// New tokens.
    pub tokens: u32,
    /// Whether the sequence is done.
    pub finished: bool,
    /// Prompt tokens found in the prefix cache when the sequence was admitted.
    pub cached_tokens: u32,
}

enum Command {
    Submit {
        spec: SeqSpec,
        out: mpsc::UnboundedSender<Delivery>,
        admitted: tokio::sync::oneshot::Sender<Result<(), AdmitError>>,
    },
    Cancel(u64),
}

/// Counters the engine keeps up to date, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sequences admitted.
    pub running: AtomicU64,
    /// Sequences queued.
    pub waiting: AtomicU64,
    /// KV tokens reserved.
    pub kv_used: AtomicU64,
    /// KV capacity.
    pub kv_capacity: AtomicU64,
    /// Steps run.
    pub steps: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Prompt tokens prefilled.
    pub prefill_tokens: AtomicU64,
    /// Sequences cancelled before they finished.
    pub cancelled: AtomicU64,
    /// Sequences finished.
    pub finished: AtomicU64,
    /// KV tokens of cached blocks no running sequence uses.
    pub kv_cached_free: AtomicU64,
    /// Prompt blocks found in the cache.
    pub reused_blocks: AtomicU64,
    /// Prompt blocks computed.
    pub missed_blocks: AtomicU64,
    /// Prompt tokens looked up in the cache.
    pub cache_query_tokens: AtomicU64,
    /// Prompt tokens found in the cache.
    pub cache_hit_tokens: AtomicU64,
    /// Cached blocks evicted.
    pub evicted_blocks: AtomicU64,
}

/// The KV cache events a worker keeps for `POST /kv_cache_events`: at most
/// `event_buffer_max_size`, the oldest dropped first, each numbered in order (upstream's
/// `KVCacheEventManager`). The first one says the cache was created.
#[derive(Debug, Default)]
pub struct EventBuffer {
    max: usize,
    next_id: u64,
    window_size: u32,
    events: VecDeque<KvCacheEvent>,
}

impl EventBuffer {
    /// A buffer of at most `max` events (0: events are not kept) for a cache of `blocks` blocks.
    pub fn new(max: usize, window_size: u32, blocks: u64) -> EventBuffer {
        let mut b = EventBuffer {
            max,
            next_id: 0,
            window_size,
            events: VecDeque::new(),
        };
        b.push(KvCacheEventData::Created {
            num_blocks_per_cache_level: vec![blocks, 0],
        });
        b
    }

    /// Keep an event (dropping the oldest when full).
    pub fn push(&mut self, data: KvCacheEventData) {
        if self.max == 0 {
            return;
        }
        if self.events.len() == self.max {
            self.events.pop_front();
        }
        self.events.push_back(KvCacheEvent {
            event_id: self.next_id,
            data,
            window_size: self.window_size,
        });
        self.next_id += 1;
    }

    /// Every kept event, oldest first; the buffer is empty afterwards.
    pub fn drain(&mut self) -> Vec<KvCacheEvent> {
        self.events.drain(..).collect()
    }
}

/// A handle to the engine task.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::UnboundedSender<Command>,
    stats: Arc<Stats>,
    events: Arc<Mutex<EventBuffer>>,
}

/// A running sequence: its tokens arrive on `rx`; dropping it cancels the sequence.
pub struct Sequence {
    /// Deliveries.
    pub rx: mpsc::UnboundedReceiver<Delivery>,
    id: u64,
    done: bool,
    cached_tokens: u32,
    engine: Engine,
}

impl Sequence {
    /// Receive the next delivery; `None` when the engine stopped.
    pub async fn next(&mut self) -> Option<Delivery> {
        let d = self.rx.recv().await;
        if d.is_none_or(|d| d.finished) {
            self.done = true;
        }
        if let Some(d) = d {
            self.cached_tokens = d.cached_tokens;
        }
        d
    }

    /// A delivery that has already arrived, without waiting.
    pub fn try_next(&mut self) -> Option<Delivery> {
        let d = self.rx.try_recv().ok()?;
        if d.finished {
            self.done = true;
        }
        self.cached_tokens = d.cached_tokens;
        Some(d)
    }

    /// Prompt tokens this server took from its prefix cache instead of computing them (known
    /// from the first delivery on; 0 for a sequence whose KV was handed over).
    pub fn cached_tokens(&self) -> u32 {
        self.cached_tokens
    }
}

impl Drop for Sequence {
    fn drop(&mut self) {
        if !self.done {
            // The client went away: free the slot and KV now, not when the tokens would be due.
            let _ = self.engine.tx.send(Command::Cancel(self.id));
        }
    }
}

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The scheduler refused it.
    #[error(transparent)]
    Admit(#[from] AdmitError),
    /// The engine has stopped.
    #[error("the engine is shutting down")]
    Stopped,
}

impl Engine {
    /// Start the engine task. It ends when `cancel` fires or every handle is dropped.
    pub fn start(
        scheduler: Scheduler,
        cancel: CancellationToken,
    ) -> (Engine, tokio::task::JoinHandle<()>) {
        Engine::start_with(scheduler, 0, false, cancel)
    }

    /// [`Engine::start`], its KV cache events labelled with attention window `window_size` (the
    /// server's `max_seq_len`), and, when `iter_log` is set, every step printed to stderr as
    /// TensorRT-LLM's executor does with `print_iter_log`
    /// ([`crate::scheduler::Step::iteration_log`]).
    pub fn start_with(
        scheduler: Scheduler,
        window_size: u32,
        iter_log: bool,
        cancel: CancellationToken,
    ) -> (Engine, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        stats
            .kv_capacity
            .store(scheduler.kv_capacity(), Ordering::Relaxed);
        let settings = scheduler.cache_settings();
        let blocks = scheduler.kv_capacity() / u64::from(settings.tokens_per_block.max(1));
        let events = Arc::new(Mutex::new(EventBuffer::new(
            settings.event_buffer_max_size,
            window_size,
            blocks,
        )));
        let task = tokio::spawn(run(
            scheduler,
            rx,
            stats.clone(),
            events.clone(),
            cancel,
            iter_log,
        ));
        (Engine { tx, stats, events }, task)
    }

    /// The engine's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The KV cache events kept since the last call, oldest first.
    pub fn drain_events(&self) -> Vec<KvCacheEvent> {
        self.events
            .lock()
            .map(|mut b| b.drain())
            .unwrap_or_default()
    }

    /// Submit a sequence.
    pub async fn submit(&self, spec: SeqSpec) -> Result<Sequence, EngineError> {
        let id = spec.id;
        let (out, rx) = mpsc::unbounded_channel();
        let (admitted, ok) = tokio::sync::oneshot::channel();
        self.tx
            .send(Command::Submit {
                spec,
                out,
                admitted,
            })
            .map_err(|_| EngineError::Stopped)?;
        ok.await.map_err(|_| EngineError::Stopped)??;
        Ok(Sequence {
            rx,
            id,
            done: false,
            cached_tokens: 0,
            engine: self.clone(),
        })
    }
}

/// A running sequence's receiver, and its prompt tokens found cached when it was admitted.
struct Out {
    tx: mpsc::UnboundedSender<Delivery>,
    cached_tokens: u32,
}

async fn run(
    mut sched: Scheduler,
    mut rx: mpsc::UnboundedReceiver<Command>,
    stats: Arc<Stats>,
    events: Arc<Mutex<EventBuffer>>,
    cancel: CancellationToken,
    iter_log: bool,
) {
    let mut previous: Option<Duration> = None;
    let mut outs: std::collections::HashMap<u64, Out> = std::collections::HashMap::new();
    let mut clock = Instant::now();
    loop {
        // Take everything that arrived; wait for work when idle.
        if sched.is_idle() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                cmd = rx.recv() => match cmd {
                    Some(cmd) => apply(cmd, &mut sched, &mut outs, &stats),
                    None => return,
                },
            }
            clock = Instant::now();
        }
        while let Ok(cmd) = rx.try_recv() {
            apply(cmd, &mut sched, &mut outs, &stats);
        }
        if sched.is_idle() {
            publish(&sched, &stats);
            continue;
        }
        let step = sched.step();
        for (id, cached_tokens) in &step.admitted {
            if let Some(out) = outs.get_mut(id) {
                out.cached_tokens = *cached_tokens;
            }
        }
        let new_events = sched.take_events();
        if !new_events.is_empty() {
            if let Ok(mut buffer) = events.lock() {
                for e in new_events {
                    buffer.push(e);
                }
            }
        }
        let iter = stats.steps.fetch_add(1, Ordering::Relaxed);
        if iter_log {
            // The engine's own log, on the process's stderr like the engine it stands in for.
            eprintln!("{}", step.iteration_log(iter, previous));
        }
        previous = Some(step.duration);
        stats
            .prefill_tokens
            .fetch_add(u64::from(step.prefill_tokens), Ordering::Relaxed);
        publish(&sched, &stats);
        if step.duration > Duration::ZERO {
            clock += step.duration;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(clock) => {}
            }
        } else {
            // Zero-cost model: let the HTTP tasks run between steps.
            tokio::task::yield_now().await;
            clock = Instant::now();
        }
        for e in step.emissions {
            stats
                .generated_tokens
                .fetch_add(u64::from(e.tokens), Ordering::Relaxed);
            let delivered = outs.get(&e.id).is_some_and(|out| {
                out.tx
                    .send(Delivery {
                        tokens: e.tokens,
                        finished: e.finished,
                        cached_tokens: out.cached_tokens,
                    })
                    .is_ok()
            });
            if e.finished {
                outs.remove(&e.id);
                stats.finished.fetch_add(1, Ordering::Relaxed);
            } else if !delivered {
                // The receiver is gone (client disconnected between steps).
                outs.remove(&e.id);
                if sched.cancel(e.id) {
                    stats.cancelled.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        publish(&sched, &stats);
    }
}

fn apply(
    cmd: Command,
    sched: &mut Scheduler,
    outs: &mut std::collections::HashMap<u64, Out>,
    stats: &Stats,
) {
    match cmd {
        Command::Submit {
            spec,
            out,
            admitted,
        } => {
            let id = spec.id;
            let result = sched.submit(spec);
            if result.is_ok() {
                outs.insert(
                    id,
                    Out {
                        tx: out,
                        cached_tokens: 0,
                    },
                );
            }
            let _ = admitted.send(result);
        }
        Command::Cancel(id) => {
            outs.remove(&id);
            if sched.cancel(id) {
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn publish(sched: &Scheduler, stats: &Stats) {
    stats
        .running
        .store(sched.running() as u64, Ordering::Relaxed);
    stats
        .waiting
        .store(sched.waiting() as u64, Ordering::Relaxed);
    stats.kv_used.store(sched.kv_used(), Ordering::Relaxed);
    stats
        .kv_cached_free
        .store(sched.kv_cached_free(), Ordering::Relaxed);
    let c = sched.cache_stats();
    for (slot, v) in [
        (&stats.reused_blocks, c.reused_blocks),
        (&stats.missed_blocks, c.missed_blocks),
        (&stats.cache_query_tokens, c.query_tokens),
        (&stats.cache_hit_tokens, c.hit_tokens),
        (&stats.evicted_blocks, c.evicted_blocks),
    ] {
        slot.store(v, Ordering::Relaxed);
    }
}
