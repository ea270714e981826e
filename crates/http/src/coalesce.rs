//! Coalesced reads: concurrent GET-by-id requests that are waiting for the database are answered
//! together, with one hand-off to the blocking pool and one query (`WHERE id = ANY($1)`).
//!
//! At most [`ReadCoalescer::new`]'s `lanes` batches are read at once (by default one per two
//! cores: each batch in flight keeps a core busy between the database and the thread that
//! answers it, and fewer lanes make larger batches and fewer thread hand-offs). A request joins the last batch that is still waiting for a lane, or opens a new
//! one; a lane that comes free takes the oldest waiting batch (closing it: later requests open
//! the next one) and queries for it at once, so every answer reflects a state at least as new as
//! its request's arrival: coalescing never makes a read stale. At low load a lane is free, the
//! request's batch is taken at once, and it waits for no one; under load the requests that arrive
//! while every lane is busy share batches, up to [`BATCH_CAP`] ids each. Each request still gets
//! its own answer on its own worker: a missing id is that request's 404, and a storage failure
//! is a 503 for each request of the batch, each with its own error.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use books_domain::{Book, BookId, BookService};
use tokio::sync::oneshot;

use crate::blocking::HANDLER_DEADLINE;
use crate::representation::problem::ApiError;

/// The most ids one query asks for.
pub(crate) const BATCH_CAP: usize = 64;

/// What one request of a batch gets.
type Answer = Result<Option<Book>, ApiError>;
type Batch = Vec<(BookId, oneshot::Sender<Answer>)>;

#[derive(Debug, Default)]
struct Queue {
    /// Batches waiting for a lane, oldest first; only the last one still takes requests.
    waiting: VecDeque<Batch>,
    /// Lanes reading now.
    busy: usize,
}

/// The batching of book reads for one server.
#[derive(Debug)]
pub(crate) struct ReadCoalescer {
    service: BookService,
    lanes: usize,
    queue: Mutex<Queue>,
    /// Reads answered, and queries made for them: their ratio is the batching achieved.
    reads: AtomicU64,
    queries: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock still holds a usable value: nothing here is left half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl ReadCoalescer {
    /// Reads through `service`, at most `lanes` queries at once.
    pub(crate) fn new(service: BookService, lanes: usize) -> Self {
        Self {
            service,
            lanes: lanes.max(1),
            queue: Mutex::default(),
            reads: AtomicU64::new(0),
            queries: AtomicU64::new(0),
        }
    }

    /// Reads answered so far, and the queries they took.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.queries.load(Ordering::Relaxed),
        )
    }

    /// The book with `id`, read in a batch with the other reads waiting at the same time.
    ///
    /// # Errors
    ///
    /// 404 when there is no such book, 503 when storage fails or the read takes too long.
    pub(crate) async fn get(self: &Arc<Self>, id: BookId) -> Result<Book, ApiError> {
        let (sender, receiver) = oneshot::channel();
        if self.enqueue(id, sender) {
            let coalescer = Arc::clone(self);
            // The lane runs whether or not anyone waits for its handle.
            drop(actix_web::rt::task::spawn_blocking(move || {
                coalescer.run_lane()
            }));
        }
        match actix_web::rt::time::timeout(HANDLER_DEADLINE, receiver).await {
            Ok(Ok(Ok(Some(book)))) => Ok(book),
            Ok(Ok(Ok(None))) => Err(ApiError::NotFound(format!("there is no book with id {id}"))),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => Err(ApiError::Unavailable(anyhow::anyhow!(
                "the batch of this read was dropped unanswered"
            ))),
            Err(_) => Err(ApiError::Unavailable(anyhow::anyhow!(
                "the read took longer than {HANDLER_DEADLINE:?}"
            ))),
        }
    }

    /// Queues the request; true when a lane is free and must be started for it.
    fn enqueue(&self, id: BookId, sender: oneshot::Sender<Answer>) -> bool {
        let mut queue = lock(&self.queue);
        match queue.waiting.back_mut() {
            Some(batch) if batch.len() < BATCH_CAP => batch.push((id, sender)),
            _ => queue.waiting.push_back(vec![(id, sender)]),
        }
        if queue.busy < self.lanes {
            queue.busy += 1;
            true
        } else {
            false
        }
    }

    /// On a blocking thread: reads the oldest waiting batch, and the next, until none waits.
    fn run_lane(&self) {
        loop {
            let batch = {
                let mut queue = lock(&self.queue);
                match queue.waiting.pop_front() {
                    Some(batch) => batch,
                    None => {
                        queue.busy -= 1;
                        return;
                    }
                }
            };
            self.answer(batch);
        }
    }

    fn answer(&self, batch: Batch) {
        let mut ids: Vec<BookId> = batch.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        self.reads.fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.queries.fetch_add(1, Ordering::Relaxed);
        match self.service.get_books(&ids) {
            Ok(books) => {
                for (id, sender) in batch {
                    // A request that has given up waiting is simply not answered.
                    let _ = sender.send(Ok(books.iter().find(|book| book.id() == id).cloned()));
                }
            }
            Err(error) => {
                let unavailable = matches!(error, books_domain::StorageError::Unavailable(_));
                let cause = format!("{:#}", anyhow::Error::from(error));
                for (_, sender) in batch {
                    let cause = anyhow::anyhow!("{cause}");
                    let _ = sender.send(Err(if unavailable {
                        ApiError::Unavailable(cause)
                    } else {
                        ApiError::Internal(cause)
                    }));
                }
            }
        }
    }
}
