//! The live change feed of one instance: a thread that learns of new changes, reads them once,
//! and broadcasts them to every open stream ([`ChangeHub::follow`]). While streams are open it reads
//! every [`POLL_EVERY`] (reading numbers the changes committed since, see `adapters::changes`),
//! and at once when the storage's [`ChangeSignal`] says another instance has numbered some.
//! Writers do not signal: a `NOTIFY` in every write transaction would serialize their commits.
//!
//! A stream subscribes first, then catches up from storage on its own, then follows the
//! broadcast. It waits on the broadcast only once it has sent everything up to the hub's
//! position (every change after it will be broadcast, and the stream is already subscribed); and
//! seqs are dense (each change's is one more than the one before it), so a batch that starts past
//! the next seq a stream expects tells it to catch up from storage again. No race between the hub
//! and a stream can lose a change. Idle streams hold no
//! database connection: only the hub reads, and only while someone listens.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use books_domain::{BookService, Change, ChangeLimit, ChangeSignal, ChangesError};
use futures_util::Stream;
use tokio::sync::broadcast;

use crate::run_blocking;

/// How often the hub asks its signal whether something changed.
const WAKE_CHECK: Duration = Duration::from_millis(100);
/// How often the hub reads storage while streams are open and nothing signalled.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How many batches of changes a slow stream may fall behind before it reads from storage.
const BACKLOG: usize = 64;

/// How many changes a stream reads from storage at once while it catches up: it reads the next
/// page only once the previous one has been taken by its reader, so a stream holds at most this
/// many, however far behind it starts and however slowly its client reads.
const CATCH_UP_PAGE: u64 = 100;

/// A batch of changes, in seq order, shared by every stream.
type Batch = Arc<Vec<Change>>;

/// The instance's feed hub. Dropping it (or [`ChangeHub::stop`]) ends every open stream cleanly.
#[derive(Debug)]
pub struct ChangeHub {
    /// Taken away at stop: once the thread's copy is gone too, every receiver sees the end.
    sender: Mutex<Option<broadcast::Sender<Batch>>>,
    stopped: Arc<AtomicBool>,
    /// The last seq the hub has broadcast, or knows of: every change after it will be
    /// broadcast, so a stream that has taken less must catch up from storage first (the hub may
    /// have learnt of changes it never broadcast, when it starts following the feed, or broadcast
    /// them before the stream subscribed).
    position: Arc<AtomicU64>,
}

/// Why a stream could not start.
#[derive(Debug)]
pub enum FollowError {
    /// The hub has stopped: the instance is shutting down.
    Stopped,
    /// The first read failed: the position is past the retention or the newest change, or
    /// storage failed.
    Changes(ChangesError),
}

impl From<ChangesError> for FollowError {
    fn from(error: ChangesError) -> Self {
        Self::Changes(error)
    }
}

impl ChangeHub {
    /// Starts the hub's thread.
    pub fn start(service: BookService, signal: Option<Box<dyn ChangeSignal>>) -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        let stopped = Arc::new(AtomicBool::new(false));
        let position = Arc::new(AtomicU64::new(0));
        // Never joined: the thread ends by itself once stopped (see `stop`).
        let started = {
            let (sender, stopped, position) = (sender.clone(), stopped.clone(), position.clone());
            std::thread::Builder::new()
                .name("change-feed".to_owned())
                .spawn(move || run(&service, signal, &sender, &stopped, &position))
        };
        if started.is_err() {
            tracing::error!(
                "could not start the change feed's thread; live streams get no changes"
            );
        }
        Self {
            sender: Mutex::new(Some(sender)),
            stopped,
            position,
        }
    }

    /// A receiver of every batch broadcast from now on; `None` once the hub has stopped.
    fn subscribe(&self) -> Option<broadcast::Receiver<Batch>> {
        self.sender
            .lock()
            .ok()?
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    /// The changes after `after`, live: first those storage holds, then each as the hub
    /// broadcasts it, every one exactly once and in seq order, for `lifetime` (the stream then
    /// ends, and its reader resumes from the last seq it took). `hold` is kept as long as the
    /// stream lives (its place among the instance's streams, say). The stream also ends when the
    /// hub stops, or when storage can no longer serve its position.
    ///
    /// # Errors
    ///
    /// [`FollowError::Stopped`] once the hub has stopped; [`FollowError::Changes`] when the first
    /// read fails (so that a position past the retention is refused, not streamed).
    pub async fn follow(
        &self,
        service: BookService,
        after: u64,
        lifetime: Duration,
        hold: impl Send + 'static,
    ) -> Result<impl Stream<Item = SharedChange> + Send + 'static, FollowError> {
        let receiver = self.subscribe().ok_or(FollowError::Stopped)?;
        let first = run_blocking(&service, move |s| s.changes(after, catch_up_limit())).await?;
        let follower = Follower {
            service,
            receiver,
            after,
            behind: first.items.len() == catch_up_limit().get(),
            pending: Pending::of(Arc::new(first.items)),
            hub_position: self.position.clone(),
            ends_at: tokio::time::Instant::now() + lifetime,
            _hold: Box::new(hold),
        };
        Ok(futures_util::stream::unfold(
            follower,
            |mut follower| async move {
                let change = follower.next_change().await?;
                Some((change, follower))
            },
        ))
    }

    /// How many streams are open.
    pub fn streams(&self) -> usize {
        self.sender
            .lock()
            .ok()
            .and_then(|sender| sender.as_ref().map(broadcast::Sender::receiver_count))
            .unwrap_or(0)
    }

    /// Ends every stream (each ends its body cleanly) and tells the hub's thread to end, without
    /// waiting for it (it may be in a query): it ends within a tick of its current work, and
    /// drops its copy of the sender then.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        if let Ok(mut sender) = self.sender.lock() {
            sender.take();
        }
    }
}

impl Drop for ChangeHub {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    service: &BookService,
    mut signal: Option<Box<dyn ChangeSignal>>,
    sender: &broadcast::Sender<Batch>,
    stopped: &AtomicBool,
    position: &AtomicU64,
) {
    // Where the broadcast stands; unknown while nobody listens.
    let mut last: Option<u64> = None;
    let mut last_read = Instant::now();
    let mut signal_failing = false;
    while !stopped.load(Ordering::Relaxed) {
        std::thread::sleep(WAKE_CHECK);
        let woken = match signal.as_mut().map(|signal| signal.changed()) {
            None => false,
            Some(Ok(woken)) => {
                if signal_failing {
                    tracing::info!("the change feed is notified of changes again");
                    signal_failing = false;
                }
                woken
            }
            Some(Err(error)) => {
                if !signal_failing {
                    tracing::warn!(error = %error, "the change feed cannot be notified by other instances; it polls on its own");
                    signal_failing = true;
                }
                false
            }
        };
        if sender.receiver_count() == 0 {
            last = None;
            continue;
        }
        if !woken && last.is_some() && last_read.elapsed() < POLL_EVERY {
            continue;
        }
        last_read = Instant::now();
        if let Err(error) = broadcast_new(service, sender, &mut last, position) {
            tracing::warn!(error = %error, "the change feed could not read changes; it tries again");
        }
    }
}

/// Reads the changes after `last` and broadcasts them; the first time, only learns where the
/// feed stands, and wakes the streams with an empty batch so that each compares its place with
/// the hub's and catches up from storage where it is behind.
fn broadcast_new(
    service: &BookService,
    sender: &broadcast::Sender<Batch>,
    last: &mut Option<u64>,
    position: &AtomicU64,
) -> anyhow::Result<()> {
    let Some(after) = *last else {
        *last = Some(service.last_change()?);
        position.store(last.unwrap_or_default(), Ordering::Release);
        let _ = sender.send(Arc::new(Vec::new()));
        return Ok(());
    };
    let mut after = after;
    loop {
        let limit = ChangeLimit::new(ChangeLimit::MAX as u64).unwrap_or_default();
        let page = match service.changes(after, limit) {
            Ok(page) => page,
            Err(
                books_domain::ChangesError::Expired { .. }
                | books_domain::ChangesError::Ahead { .. },
            ) => {
                // Purged under the hub's feet, or the feed is now behind the hub's place (a
                // failover to a standby that lacked the last changes): start again from where
                // the feed is now.
                *last = None;
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let full = page.items.len() == limit.get();
        after = page.next_after;
        *last = Some(after);
        if page.items.is_empty() {
            return Ok(());
        }
        // No receiver is not an error: the next round will notice.
        let _ = sender.send(Arc::new(page.items));
        position.store(after, Ordering::Release);
        if !full {
            return Ok(());
        }
    }
}

/// One change of a live stream, shared with every other stream that takes it: nothing is copied
/// per stream.
#[derive(Debug, Clone)]
pub struct SharedChange {
    batch: Batch,
    index: usize,
}

impl Deref for SharedChange {
    type Target = Change;

    fn deref(&self) -> &Change {
        // `index` was checked when the change was taken from its batch.
        &self.batch[self.index]
    }
}

/// The changes of one batch (shared with the other streams) or one page not yet taken.
struct Pending {
    changes: Batch,
    next: usize,
}

impl Pending {
    fn of(changes: Batch) -> Self {
        Self { changes, next: 0 }
    }

    fn next(&mut self) -> Option<SharedChange> {
        let index = self.next;
        self.changes.get(index)?;
        self.next += 1;
        Some(SharedChange {
            batch: Arc::clone(&self.changes),
            index,
        })
    }
}

fn catch_up_limit() -> ChangeLimit {
    ChangeLimit::new(CATCH_UP_PAGE).unwrap_or_default()
}

/// A stream's state between changes.
struct Follower {
    service: BookService,
    receiver: broadcast::Receiver<Batch>,
    /// The seq of the last change taken.
    after: u64,
    /// What is left to take of the batch or page in hand.
    pending: Pending,
    /// True when the stream must read from storage before it can trust the broadcast again.
    behind: bool,
    /// The hub's position (see [`ChangeHub`]).
    hub_position: Arc<AtomicU64>,
    /// When the stream ends by itself.
    ends_at: tokio::time::Instant,
    /// Kept while the stream lives.
    _hold: Box<dyn Send>,
}

impl Follower {
    /// The next change, or `None` when the stream ends (its lifetime is over, the hub stopped,
    /// or storage can no longer serve this stream's position).
    async fn next_change(&mut self) -> Option<SharedChange> {
        let end = tokio::time::sleep_until(self.ends_at);
        tokio::pin!(end);
        loop {
            if tokio::time::Instant::now() >= self.ends_at {
                // Lived its time: the reader resumes from the last seq it took.
                return None;
            }
            if let Some(change) = self.pending.next() {
                if change.seq <= self.after {
                    continue;
                }
                self.after = change.seq;
                return Some(change);
            }
            if self.behind {
                let after = self.after;
                match run_blocking(&self.service, move |s| s.changes(after, catch_up_limit())).await
                {
                    Ok(page) => {
                        self.behind = page.items.len() == catch_up_limit().get();
                        self.pending = Pending::of(Arc::new(page.items));
                        continue;
                    }
                    Err(error) => {
                        // The reader reconnects and resumes where it was.
                        tracing::warn!(error = %error, "a change stream could not catch up; it ends");
                        return None;
                    }
                }
            }
            if self.hub_position.load(Ordering::Acquire) > self.after {
                self.behind = true;
                continue;
            }
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(batch) => {
                        // Seqs are dense: a batch that starts past the next one means some were
                        // broadcast before this stream could take them.
                        if batch.first().is_some_and(|first| first.seq > self.after + 1) {
                            self.behind = true;
                        } else {
                            self.pending = Pending::of(batch);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                () = &mut end => return None,
            }
        }
    }
}
