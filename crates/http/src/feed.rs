//! The live change feed of one instance: a thread that learns of new changes, reads them once,
//! and broadcasts them to every open Server-Sent Events stream. While streams are open it reads
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use books_domain::{BookService, Change, ChangeLimit, ChangeSignal};
use tokio::sync::broadcast;

/// How often the hub asks its signal whether something changed.
const WAKE_CHECK: Duration = Duration::from_millis(100);
/// How often the hub reads storage while streams are open and nothing signalled.
const POLL_EVERY: Duration = Duration::from_millis(250);
/// How many batches of changes a slow stream may fall behind before it reads from storage.
const BACKLOG: usize = 64;

/// A batch of changes, in seq order, shared by every stream.
pub(crate) type Batch = Arc<Vec<Change>>;

/// The instance's feed hub. Dropping it (or [`ChangeHub::stop`]) ends every open stream cleanly.
#[derive(Debug)]
pub(crate) struct ChangeHub {
    /// Taken away at stop: once the thread's copy is gone too, every receiver sees the end.
    sender: Mutex<Option<broadcast::Sender<Batch>>>,
    stopped: Arc<AtomicBool>,
    /// The last seq the hub has broadcast, or knows of (see [`ChangeHub::position`]).
    position: Arc<AtomicU64>,
    /// How often an idle stream sends a comment, so that proxies keep it open.
    heartbeat: Duration,
}

impl ChangeHub {
    /// Starts the hub's thread.
    pub(crate) fn start(
        service: BookService,
        signal: Option<Box<dyn ChangeSignal>>,
        heartbeat: Duration,
    ) -> Self {
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
            heartbeat,
        }
    }

    /// A receiver of every batch broadcast from now on; `None` once the hub has stopped.
    pub(crate) fn subscribe(&self) -> Option<broadcast::Receiver<Batch>> {
        self.sender
            .lock()
            .ok()?
            .as_ref()
            .map(broadcast::Sender::subscribe)
    }

    /// Every change after this seq will be broadcast: a stream that has sent less must catch up
    /// from storage first (the hub may have learnt of changes it never broadcast, when it starts
    /// following the feed, or broadcast them before the stream subscribed).
    pub(crate) fn position(&self) -> Arc<AtomicU64> {
        self.position.clone()
    }

    /// How often an idle stream sends a heartbeat comment.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.heartbeat
    }

    /// How many streams are open.
    pub(crate) fn streams(&self) -> usize {
        self.sender
            .lock()
            .ok()
            .and_then(|sender| sender.as_ref().map(broadcast::Sender::receiver_count))
            .unwrap_or(0)
    }

    /// Ends every stream (each ends its body cleanly) and tells the hub's thread to end, without
    /// waiting for it (it may be in a query): it ends within a tick of its current work, and
    /// drops its copy of the sender then.
    pub(crate) fn stop(&self) {
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
