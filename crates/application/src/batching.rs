//! Batched database work: concurrent requests that are waiting for the database are served
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
use std::sync::{Arc, Mutex, OnceLock};

use std::time::Duration;

use books_domain::{
    Book, BookId, BookService, ConsistencyToken, CreateBookError, GetBookError, ListBooksError,
    ListQuery, NewBook, NewBooks, Page, StorageError, TargetedPatch, WriteBookError,
};
use tokio::sync::oneshot;

use crate::{DEADLINE, Written, token_after_write};

/// The most requests one batch serves.
pub const BATCH_CAP: usize = 64;

/// What one request of a batch gets.
type Answer<A> = Result<A, StorageError>;
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
pub struct Coalescer<T, A> {
    service: BookService,
    lanes: usize,
    queue: Mutex<Queue<T, A>>,
    work: Work<T, A>,
    /// Two requests that must not share a batch (two writes to one book).
    conflict: Option<fn(&T, &T) -> bool>,
    /// How long a request waits for its answer before it is answered 503 and its item is
    /// dropped (unless its batch is already being worked on).
    deadline: Duration,
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
            deadline: DEADLINE,
            served: AtomicU64::new(0),
            batches: AtomicU64::new(0),
        }
    }

    /// Requests served so far, and the batches they took.
    pub fn counts(&self) -> (u64, u64) {
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
    /// [`StorageError::Unavailable`] when storage fails or the work takes too long,
    /// [`StorageError::Unknown`] for anything unexpected (a batch whose work panicked).
    async fn call(self: &Arc<Self>, item: T) -> Result<A, StorageError> {
        let (sender, receiver) = oneshot::channel();
        if self.enqueue(item, sender) {
            let coalescer = Arc::clone(self);
            // The lane runs whether or not anyone waits for its handle.
            drop(tokio::task::spawn_blocking(move || coalescer.run_lane()));
        }
        match tokio::time::timeout(self.deadline, receiver).await {
            Ok(Ok(answer)) => answer,
            // Only a batch whose work panicked goes unanswered (see `run_lane`): a bug.
            Ok(Err(_)) => Err(StorageError::Unknown(anyhow::anyhow!(
                "the batch of this request was dropped unanswered"
            ))),
            // Dropping the receiver tells the lane: an item not yet worked on is left out of its
            // batch (a create the client was told failed must not happen later).
            Err(_) => Err(StorageError::Unavailable(anyhow::anyhow!(
                "the database work took longer than {:?}",
                self.deadline
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
    /// A batch whose work panics is dropped (each of its requests gets an error) and the lane goes
    /// on: a bug in one batch must not stop every later request of its kind.
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
            let worked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.answer(batch);
            }));
            if worked.is_err() {
                tracing::error!("a batch of database work panicked; its requests get an error");
            }
        }
    }

    fn answer(&self, batch: Batch<T, A>) {
        // Requests that have stopped waiting (past their deadline) are not worked on.
        let (items, senders): (Vec<T>, Vec<_>) = batch
            .into_iter()
            .filter(|(_, sender)| !sender.is_closed())
            .unzip();
        if items.is_empty() {
            return;
        }
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
                    let _ = sender.send(Err(StorageError::Unknown(anyhow::anyhow!("{cause}"))));
                }
            }
            Err(error) => {
                // Each request gets its own copy of the error, with the whole cause.
                for sender in senders {
                    let _ = sender.send(Err(error.copy()));
                }
            }
        }
    }
}

/// Reads of a book by id, each with the token of the writes it must see.
pub type ReadCoalescer = Coalescer<(BookId, Option<ConsistencyToken>), Option<Book>>;

impl ReadCoalescer {
    /// Reads through `service`, at most `lanes` queries at once.
    pub fn reads(service: BookService, lanes: usize) -> Self {
        Self::new(service, lanes, read_books)
    }

    /// The book with `id`, read in a batch with the other reads waiting at the same time, from
    /// data that holds every write up to `seen`.
    ///
    /// # Errors
    ///
    /// [`GetBookError::NotFound`] when there is no such book, [`GetBookError::Storage`] when
    /// storage fails or the read takes too long.
    pub async fn get(
        self: &Arc<Self>,
        id: BookId,
        seen: Option<ConsistencyToken>,
    ) -> Result<Book, GetBookError> {
        self.call((id, seen))
            .await?
            .ok_or(GetBookError::NotFound(id))
    }
}

fn read_books(
    service: &BookService,
    reads: &[(BookId, Option<ConsistencyToken>)],
) -> Result<Vec<Option<Book>>, StorageError> {
    let mut distinct: Vec<BookId> = reads.iter().map(|(id, _)| *id).collect();
    distinct.sort_unstable();
    distinct.dedup();
    // One read for the batch, so it must see the latest write any of its requests saw.
    let seen = reads.iter().fold(None, |seen, (_, token)| {
        ConsistencyToken::latest(seen, *token)
    });
    let books = service.get_books_seeing(&distinct, seen)?;
    Ok(reads
        .iter()
        .map(|(id, _)| books.iter().find(|book| book.id() == *id).cloned())
        .collect())
}

/// Creates without an idempotency key.
pub type CreateCoalescer = Coalescer<NewBook, Result<Written<Book>, CreateBookError>>;

impl CreateCoalescer {
    /// Creates through `service`, at most `lanes` batches at once.
    pub fn creates(service: BookService, lanes: usize) -> Self {
        Self::new(service, lanes, create_books)
    }

    /// Creates `book` in one transaction with the other creates waiting at the same time.
    ///
    /// # Errors
    ///
    /// [`CreateBookError::IsbnTaken`] when another book has its ISBN (this create alone is
    /// refused), or [`CreateBookError::Storage`] when storage fails (then none of the batch's
    /// books exists).
    pub async fn create(self: &Arc<Self>, book: NewBook) -> Result<Written<Book>, CreateBookError> {
        self.call(book).await?
    }
}

fn create_books(
    service: &BookService,
    books: &[NewBook],
) -> Result<Vec<Result<Written<Book>, CreateBookError>>, StorageError> {
    // Creates that arrived together but do not belong together: one of them has an ISBN that is
    // taken, or two have the same one. Each then goes alone, so that only the one in the wrong
    // gets the 409.
    let one_by_one = || {
        books
            .iter()
            .map(|book| {
                let outcome = service.create_book(book)?;
                Ok(Written {
                    outcome,
                    token: token_after_write(service),
                })
            })
            .collect()
    };
    let Ok(batch) = NewBooks::new(books.to_vec()) else {
        return Ok(one_by_one());
    };
    let created = match service.create_books(&batch) {
        Ok(created) => created,
        Err(CreateBookError::IsbnTaken(_)) => return Ok(one_by_one()),
        Err(CreateBookError::Storage(error)) => return Err(error),
        Err(other) => return Err(StorageError::Unknown(anyhow::anyhow!(other))),
    };
    let token = token_after_write(service);
    Ok(created
        .into_iter()
        .map(|outcome| Ok(Written { outcome, token }))
        .collect())
}

/// Pages of listings, each with the token of the writes it must see; each page succeeds or fails
/// on its own. Requests of one batch that ask for the same page share it: a popular page is read
/// once, copied for none of them, and rendered once (see [`SharedPage`]).
pub type ListCoalescer =
    Coalescer<(ListQuery, Option<ConsistencyToken>), Result<Arc<SharedPage>, ListBooksError>>;

/// A page read once for every request of a batch that asked for it (the same query, so the same
/// answer), with room for its rendering: the first of those requests to answer makes it, and the
/// others send the same bytes. Under load every client that opens the catalogue asks for its
/// first page, and serializing 20 books was the largest part of answering it.
#[derive(Debug)]
pub struct SharedPage {
    page: Page,
    rendering: OnceLock<Arc<[u8]>>,
}

impl SharedPage {
    /// The page.
    pub fn page(&self) -> &Page {
        &self.page
    }

    /// The page's rendering: made by `render` for the first request that asks, the same bytes
    /// for the others. One rendering per page: a caller that renders it in another form (another
    /// media type) renders it itself. Two requests that ask at the same moment may both render
    /// it; neither waits for the other.
    ///
    /// # Errors
    ///
    /// What `render` returns.
    pub fn rendering<E>(
        &self,
        render: impl FnOnce(&Page) -> Result<Vec<u8>, E>,
    ) -> Result<Arc<[u8]>, E> {
        if let Some(rendering) = self.rendering.get() {
            return Ok(Arc::clone(rendering));
        }
        let rendering: Arc<[u8]> = render(&self.page)?.into();
        // Another request of the batch may have set it meanwhile: the same bytes.
        let _ = self.rendering.set(Arc::clone(&rendering));
        Ok(rendering)
    }
}

impl From<Page> for SharedPage {
    fn from(page: Page) -> Self {
        Self {
            page,
            rendering: OnceLock::new(),
        }
    }
}

impl ListCoalescer {
    /// Lists through `service`, at most `lanes` batches at once.
    pub fn listings(service: BookService, lanes: usize) -> Self {
        Self::new(service, lanes, list_pages)
    }

    /// The page `query` asks for, read with the other listings waiting at the same time, from
    /// data that holds every write up to `seen`.
    ///
    /// # Errors
    ///
    /// [`ListBooksError::Storage`] when storage fails (for this query: another listing's failure
    /// is not this one's) or the read takes too long.
    pub async fn page(
        self: &Arc<Self>,
        query: ListQuery,
        seen: Option<ConsistencyToken>,
    ) -> Result<Arc<SharedPage>, ListBooksError> {
        self.call((query, seen)).await?
    }
}

/// The listings whose search term is too short for the trigram indexes (under three characters):
/// each may read the whole table, so they have a lane of their own, one batch at a time, and
/// however many clients send them they hold one connection and never delay other listings.
#[derive(Debug)]
pub struct ScanListings(pub Arc<ListCoalescer>);

impl ScanListings {
    /// The shortest search term the trigram indexes serve.
    const INDEXED_TERM: usize = 3;

    /// True when `query` must read the table rather than an index to find its matches.
    pub fn needed_for(query: &ListQuery) -> bool {
        query
            .filter
            .search
            .as_ref()
            .is_some_and(|term| term.as_str().chars().count() < Self::INDEXED_TERM)
    }
}

fn list_pages(
    service: &BookService,
    queries: &[(ListQuery, Option<ConsistencyToken>)],
) -> Result<Vec<Result<Arc<SharedPage>, ListBooksError>>, StorageError> {
    let seen = queries.iter().fold(None, |seen, (_, token)| {
        ConsistencyToken::latest(seen, *token)
    });
    Ok(pages_of(
        queries.iter().map(|(query, _)| query),
        |query| {
            service
                .list_books_seeing(query, seen)
                .map(|page| Arc::new(SharedPage::from(page)))
        },
        |ListBooksError::Storage(error)| ListBooksError::Storage(error.copy()),
    ))
}

/// Each query's page, identical queries read once; a query that fails fails alone (one listing
/// that meets the statement timeout must not fail the unrelated listings of its batch).
fn pages_of<'q, P: Clone, E>(
    queries: impl Iterator<Item = &'q ListQuery>,
    read: impl Fn(&ListQuery) -> Result<P, E>,
    copy_error: impl Fn(&E) -> E,
) -> Vec<Result<P, E>> {
    let copy = |page: &Result<P, E>| match page {
        Ok(page) => Ok(page.clone()),
        Err(error) => Err(copy_error(error)),
    };
    let mut read_so_far: Vec<(&ListQuery, Result<P, E>)> = Vec::new();
    queries
        .map(|query| {
            if let Some((_, page)) = read_so_far.iter().find(|(done, _)| *done == query) {
                return copy(page);
            }
            let page = read(query);
            let answer = copy(&page);
            read_so_far.push((query, page));
            answer
        })
        .collect()
}

/// Patches and replacements (a replacement is a patch of every field).
pub type PatchCoalescer = Coalescer<TargetedPatch, Written<Result<Book, WriteBookError>>>;

impl PatchCoalescer {
    /// Writes through `service`, at most `lanes` batches at once.
    pub fn patches(service: BookService, lanes: usize) -> Self {
        Self {
            conflict: Some(|a: &TargetedPatch, b: &TargetedPatch| a.id == b.id),
            ..Self::new(service, lanes, patch_books)
        }
    }

    /// Applies `patch`, in one statement with the other writes waiting at the same time.
    ///
    /// # Errors
    ///
    /// The patch's own outcome: [`WriteBookError::NotFound`],
    /// [`WriteBookError::VersionMismatch`], or [`WriteBookError::Storage`] when storage fails.
    pub async fn patch(
        self: &Arc<Self>,
        patch: TargetedPatch,
    ) -> Result<Written<Book>, WriteBookError> {
        let Written { outcome, token } = self.call(patch).await?;
        Ok(Written {
            outcome: outcome?,
            token,
        })
    }
}

fn patch_books(
    service: &BookService,
    patches: &[TargetedPatch],
) -> Result<Vec<Written<Result<Book, WriteBookError>>>, StorageError> {
    let outcomes = service.patch_books(patches);
    let token = outcomes
        .iter()
        .any(Result::is_ok)
        .then(|| token_after_write(service))
        .flatten();
    Ok(outcomes
        .into_iter()
        .map(|outcome| Written { outcome, token })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use books_domain::{InMemoryBookRepository, PageSize};

    use super::*;

    fn service() -> BookService {
        BookService::new(InMemoryBookRepository::default())
    }

    fn coalescer<A: Send + 'static>(
        work: Work<u32, A>,
        deadline: Duration,
    ) -> Arc<Coalescer<u32, A>> {
        Arc::new(Coalescer {
            deadline,
            ..Coalescer::new(service(), 1, work)
        })
    }

    static WORKED_ON: Mutex<Vec<u32>> = Mutex::new(Vec::new());

    /// Item 1 keeps the only lane busy for 300 ms.
    fn slow_first(_: &BookService, items: &[u32]) -> Result<Vec<u32>, StorageError> {
        lock(&WORKED_ON).extend_from_slice(items);
        if items.contains(&1) {
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(items.to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_stopped_waiting_is_left_out_of_its_batch() {
        let coalescer = coalescer(slow_first, Duration::from_millis(100));
        let busy = {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.call(1).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Queued behind the slow batch, it gives up at its deadline: 503, and it must not run
        // later (a create the client was told failed would happen after all).
        let late = coalescer.call(2).await;
        assert!(
            matches!(late, Err(StorageError::Unavailable(_))),
            "{late:?}"
        );
        // (The slow one outlives its deadline too, but its batch was already being worked on.)
        let _ = busy.await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(*lock(&WORKED_ON), [1], "the abandoned item was worked on");
        // The lane is free again, and a request that waits is answered.
        assert_eq!(coalescer.call(3).await.unwrap(), 3);
    }

    /// Item 13 is a bug.
    fn panics_on_13(_: &BookService, items: &[u32]) -> Result<Vec<u32>, StorageError> {
        assert!(!items.contains(&13), "a bug in the batch's work");
        Ok(items.to_vec())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_panics_gets_an_error_and_its_lane_serves_the_next() {
        let coalescer = coalescer(panics_on_13, Duration::from_secs(2));
        let failed = coalescer.call(13).await;
        assert!(
            matches!(failed, Err(StorageError::Unknown(_))),
            "{failed:?}"
        );
        for n in [1, 2, 3] {
            assert_eq!(coalescer.call(n).await.unwrap(), n, "the lane was lost");
        }
    }

    #[test]
    fn only_search_terms_too_short_for_the_trigram_indexes_take_the_scanning_lane() {
        use books_domain::{BookFilter, SearchTerm};
        let with = |term: Option<&str>| ListQuery {
            filter: BookFilter {
                search: term.map(|term| SearchTerm::new(term).unwrap()),
                ..BookFilter::default()
            },
            ..ListQuery::default()
        };
        assert!(!ScanListings::needed_for(&with(None)));
        assert!(ScanListings::needed_for(&with(Some("a"))));
        assert!(ScanListings::needed_for(&with(Some("zq"))));
        assert!(
            ScanListings::needed_for(&with(Some("é1"))),
            "characters, not bytes"
        );
        assert!(!ScanListings::needed_for(&with(Some("dun"))));
        assert!(!ScanListings::needed_for(&with(Some("García"))));
    }

    #[test]
    fn a_listing_that_fails_fails_alone_and_identical_ones_are_read_once() {
        let a = ListQuery::default();
        let b = ListQuery {
            limit: PageSize::new(5).unwrap(),
            ..ListQuery::default()
        };
        let reads = AtomicUsize::new(0);
        let pages = pages_of(
            [&a, &b, &a, &b].into_iter(),
            |query| {
                reads.fetch_add(1, Ordering::Relaxed);
                if *query == b {
                    Err(StorageError::Unavailable(anyhow::anyhow!(
                        "canceling statement due to statement timeout"
                    )))
                } else {
                    Ok(Page {
                        items: Vec::new(),
                        next: None,
                    })
                }
            },
            StorageError::copy,
        );
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        assert!(pages[0].is_ok() && pages[2].is_ok());
        for failed in [&pages[1], &pages[3]] {
            assert!(
                matches!(failed, Err(StorageError::Unavailable(cause)) if cause.to_string().contains("statement timeout")),
                "{failed:?}"
            );
        }
    }

    #[test]
    fn a_shared_page_is_rendered_once_for_all_its_requests_and_a_failed_rendering_is_not_kept() {
        let shared = Arc::new(SharedPage::from(Page {
            items: Vec::new(),
            next: None,
        }));
        let failed: Result<Arc<[u8]>, &str> = shared.rendering(|_| Err("no"));
        assert_eq!(failed, Err("no"));
        let renderings = AtomicUsize::new(0);
        let render = |_: &Page| {
            renderings.fetch_add(1, Ordering::Relaxed);
            Ok::<_, &str>(b"[]".to_vec())
        };
        let first = shared.rendering(render).unwrap();
        let second = Arc::clone(&shared).rendering(render).unwrap();
        assert_eq!(renderings.load(Ordering::Relaxed), 1);
        assert!(Arc::ptr_eq(&first, &second), "the same bytes, not a copy");
        assert_eq!(&*second, b"[]");
    }
}
