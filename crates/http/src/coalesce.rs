//! Coalesced database work: concurrent requests that are waiting for the database are served
//! together, with one hand-off to the blocking pool and one round of work for the batch.
//!
//! - [`ReadCoalescer`]: reads by id, one query (`WHERE id = ANY($1)`) per batch;
//! - [`CreateCoalescer`]: creates without an idempotency key, one multi-row `INSERT` (one commit)
//!   per batch;
//! - [`ListCoalescer`]: listing pages, each distinct query of a batch run once (a popular page
//!   asked for by many clients at once is read once), all on one blocking thread;
//! - [`PatchCoalescer`]: patches and replacements, one `UPDATE` (one commit) per batch for those
//!   that apply, each with its own version check and outcome; a batch never holds two writes to
//!   one book (each write is its own version of it), and rows are locked in id order, so batches
//!   in flight together never deadlock.
//!
//! At most `lanes` batches of a kind are worked on at once (for reads, by default one per two
//! cores: each batch in flight keeps a core busy between the database and the thread that answers
//! it, and fewer lanes make larger batches and fewer thread hand-offs; for writes, half the pool,
//! because a write batch mostly waits for its commit's flush, which batches in flight share). A request joins the last batch
//! that is still waiting for a lane, or opens a new one; a lane that comes free takes the oldest
//! waiting batch (closing it: later requests open the next one) and works on it at once, so every
//! answer reflects a state at least as new as its request's arrival: coalescing never makes a read
//! stale, and never delays a write behind a later one. At low load a lane is free, the request's
//! batch is taken at once, and it waits for no one; under load the requests that arrive while
//! every lane is busy share batches, up to [`BATCH_CAP`] each. Each request still gets its own
//! answer on its own worker: a missing id is that request's 404, and a storage failure is a 503
//! for each request of the batch, each with its own error.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use books_domain::{
    Book, BookId, BookService, ListQuery, NewBook, NewBooks, Page, PatchOf, StorageError,
    WriteBookError,
};
use tokio::sync::oneshot;

use crate::blocking::HANDLER_DEADLINE;
use crate::representation::problem::ApiError;

/// The most requests one batch serves.
pub(crate) const BATCH_CAP: usize = 64;

/// What one request of a batch gets.
type Answer<A> = Result<A, ApiError>;
type Batch<T, A> = Vec<(T, oneshot::Sender<Answer<A>>)>;

/// The work for a batch: one answer per item, in the items' order, or a failure of the whole.
type Work<T, A> = fn(&BookService, &[T]) -> Result<Vec<A>, StorageError>;

struct Queue<T, A> {
    /// Batches waiting for a lane, oldest first; only the last one still takes requests.
    waiting: VecDeque<Batch<T, A>>,
    /// Lanes working now.
    busy: usize,
}

/// The batching of one kind of database work for one server.
pub(crate) struct Coalescer<T, A> {
    service: BookService,
    lanes: usize,
    queue: Mutex<Queue<T, A>>,
    work: Work<T, A>,
    /// Two requests that must not share a batch (two writes to one book).
    conflict: Option<fn(&T, &T) -> bool>,
    /// Requests served, and batches worked on: their ratio is the batching achieved.
    served: AtomicU64,
    batches: AtomicU64,
}

impl<T, A> std::fmt::Debug for Coalescer<T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock still holds a usable value: nothing here is left half-written.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T: Send + 'static, A: Send + 'static> Coalescer<T, A> {
    fn new(service: BookService, lanes: usize, work: Work<T, A>) -> Self {
        Self {
            service,
            lanes: lanes.max(1),
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                busy: 0,
            }),
            work,
            conflict: None,
            served: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }

    /// Requests served so far, and the batches they took.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.served.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
        )
    }

    /// The answer for `item`, worked on in a batch with the other requests waiting at the same
    /// time.
    ///
    /// # Errors
    ///
    /// 503 when storage fails or the work takes too long; 500 for anything unexpected.
    async fn call(self: &Arc<Self>, item: T) -> Result<A, ApiError> {
        let (sender, receiver) = oneshot::channel();
        if self.enqueue(item, sender) {
            let coalescer = Arc::clone(self);
            // The lane runs whether or not anyone waits for its handle.
            drop(actix_web::rt::task::spawn_blocking(move || {
                coalescer.run_lane()
            }));
        }
        match actix_web::rt::time::timeout(HANDLER_DEADLINE, receiver).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(ApiError::Unavailable(anyhow::anyhow!(
                "the batch of this request was dropped unanswered"
            ))),
            Err(_) => Err(ApiError::Unavailable(anyhow::anyhow!(
                "the database work took longer than {HANDLER_DEADLINE:?}"
            ))),
        }
    }

    /// Queues the request; true when a lane is free and must be started for it.
    fn enqueue(&self, item: T, sender: oneshot::Sender<Answer<A>>) -> bool {
        let mut queue = lock(&self.queue);
        let conflict = self.conflict;
        let joins = |batch: &Batch<T, A>| {
            batch.len() < BATCH_CAP
                && conflict
                    .is_none_or(|conflict| !batch.iter().any(|(other, _)| conflict(other, &item)))
        };
        match queue.waiting.back_mut() {
            Some(batch) if joins(batch) => batch.push((item, sender)),
            _ => queue.waiting.push_back(vec![(item, sender)]),
        }
        if queue.busy < self.lanes {
            queue.busy += 1;
            true
        } else {
            false
        }
    }

    /// On a blocking thread: works on the oldest waiting batch, and the next, until none waits.
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

    fn answer(&self, batch: Batch<T, A>) {
        let (items, senders): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
        self.served.fetch_add(items.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        match (self.work)(&self.service, &items) {
            Ok(answers) if answers.len() == senders.len() => {
                for (answer, sender) in answers.into_iter().zip(senders) {
                    // A request that has given up waiting is simply not answered.
                    let _ = sender.send(Ok(answer));
                }
            }
            Ok(answers) => {
                let cause = format!(
                    "a batch of {} requests got {} answers",
                    senders.len(),
                    answers.len()
                );
                for sender in senders {
                    let _ = sender.send(Err(ApiError::Internal(anyhow::anyhow!("{cause}"))));
                }
            }
            Err(error) => {
                let unavailable = matches!(error, StorageError::Unavailable(_));
                let cause = format!("{:#}", anyhow::Error::from(error));
                for sender in senders {
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

/// Reads of a book by id.
pub(crate) type ReadCoalescer = Coalescer<BookId, Option<Book>>;

impl ReadCoalescer {
    /// Reads through `service`, at most `lanes` queries at once.
    pub(crate) fn reads(service: BookService, lanes: usize) -> Self {
        Self::new(service, lanes, read_books)
    }

    /// The book with `id`, read in a batch with the other reads waiting at the same time.
    ///
    /// # Errors
    ///
    /// 404 when there is no such book, 503 when storage fails or the read takes too long.
    pub(crate) async fn get(self: &Arc<Self>, id: BookId) -> Result<Book, ApiError> {
        self.call(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("there is no book with id {id}")))
    }
}

fn read_books(service: &BookService, ids: &[BookId]) -> Result<Vec<Option<Book>>, StorageError> {
    let mut distinct = ids.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let books = service.get_books(&distinct)?;
    Ok(ids
        .iter()
        .map(|id| books.iter().find(|book| book.id() == *id).cloned())
        .collect())
}

/// Creates without an idempotency key.
pub(crate) type CreateCoalescer = Coalescer<NewBook, Book>;

impl CreateCoalescer {
    /// Creates through `service`, at most `lanes` batches at once.
    pub(crate) fn creates(service: BookService, lanes: usize) -> Self {
        Self::new(service, lanes, create_books)
    }

    /// Creates `book` in one transaction with the other creates waiting at the same time.
    ///
    /// # Errors
    ///
    /// 503 when storage fails (then none of the batch's books exists).
    pub(crate) async fn create(self: &Arc<Self>, book: NewBook) -> Result<Book, ApiError> {
        self.call(book).await
    }
}

fn create_books(service: &BookService, books: &[NewBook]) -> Result<Vec<Book>, StorageError> {
    let batch = NewBooks::new(books.to_vec())
        .map_err(|error| StorageError::Unknown(anyhow::anyhow!(error)))?;
    service.create_books(&batch).map_err(|error| match error {
        books_domain::CreateBookError::Storage(error) => error,
        other => StorageError::Unknown(anyhow::anyhow!(other)),
    })
}

/// Pages of listings.
pub(crate) type ListCoalescer = Coalescer<ListQuery, Page>;

impl ListCoalescer {
    /// Lists through `service`, at most `lanes` batches at once.
    pub(crate) fn listings(service: BookService, lanes: usize) -> Self {
        Self::new(service, lanes, list_pages)
    }

    /// The page `query` asks for, read with the other listings waiting at the same time.
    ///
    /// # Errors
    ///
    /// 503 when storage fails or the read takes too long.
    pub(crate) async fn page(self: &Arc<Self>, query: ListQuery) -> Result<Page, ApiError> {
        self.call(query).await
    }
}

fn list_pages(service: &BookService, queries: &[ListQuery]) -> Result<Vec<Page>, StorageError> {
    let mut read: Vec<(&ListQuery, Page)> = Vec::new();
    let mut pages = Vec::with_capacity(queries.len());
    for query in queries {
        let page = match read.iter().find(|(done, _)| *done == query) {
            Some((_, page)) => page.clone(),
            None => {
                let page = service.list_books(query).map_err(|error| match error {
                    books_domain::ListBooksError::Storage(error) => error,
                })?;
                read.push((query, page.clone()));
                page
            }
        };
        pages.push(page);
    }
    Ok(pages)
}

/// Patches and replacements (a replacement is a patch of every field).
pub(crate) type PatchCoalescer = Coalescer<PatchOf, Result<Book, WriteBookError>>;

impl PatchCoalescer {
    /// Writes through `service`, at most `lanes` batches at once.
    pub(crate) fn patches(service: BookService, lanes: usize) -> Self {
        Self {
            conflict: Some(|a: &PatchOf, b: &PatchOf| a.id == b.id),
            ..Self::new(service, lanes, patch_books)
        }
    }

    /// Applies `patch`, in one statement with the other writes waiting at the same time.
    ///
    /// # Errors
    ///
    /// The patch's own outcome: 404, 412, or 503 when storage fails.
    pub(crate) async fn patch(self: &Arc<Self>, patch: PatchOf) -> Result<Book, ApiError> {
        Ok(self.call(patch).await??)
    }
}

fn patch_books(
    service: &BookService,
    patches: &[PatchOf],
) -> Result<Vec<Result<Book, WriteBookError>>, StorageError> {
    Ok(service.patch_books(patches))
}
