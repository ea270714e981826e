//! A whole export, streamed with back-pressure: a blocking thread reads the catalogue from one
//! snapshot, a slice at a time, and hands each slice (encoded there, off the async workers) to
//! the stream its reader takes. At most [`SLICES_IN_FLIGHT`] slices wait in between, so memory
//! stays flat whatever the catalogue's size and however slowly the reader reads.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use books_domain::{Book, BookService, ExportQuery, ListBooksError};
use futures_util::Stream;
use tokio::sync::mpsc;

/// How many slices may wait in memory between the database and the reader.
const SLICES_IN_FLIGHT: usize = 2;

/// The bounds of one export.
#[derive(Debug, Clone, Copy)]
pub struct ExportLimits {
    /// The longest the export may take (its snapshot holds back vacuum meanwhile).
    pub max_duration: Duration,
    /// How long it waits for its reader to take the next slice before giving up: a reader that
    /// stops reading must not hold a database connection for ever.
    pub stalled_reader: Duration,
}

/// How an export ended before its end: the stream's last item, after which it ends. A reader
/// must then treat what it got as incomplete.
#[derive(Debug)]
pub enum ExportCut {
    /// Storage failed after some slices were handed over.
    Failed(ListBooksError),
    /// It ran out of time, or its reader stalled (logged where it stopped).
    StoppedShort,
}

/// Starts exporting the books `query` selects, each slice encoded by `encode` (given whether it
/// is the first) on the export's blocking thread. `hold` is kept until the export's thread is
/// done (its place among the instance's exports, say).
///
/// The stream yields every encoded slice, in order, then ends: cleanly when the export is
/// complete, or after one [`ExportCut`]. An export with no book yields one slice, the encoding
/// of none (a CSV export is still its header).
///
/// # Errors
///
/// The export's first failure, when it comes before any slice: a database that fails at once is
/// refused like on any other request.
pub async fn export<T: Send + 'static>(
    service: BookService,
    query: ExportQuery,
    limits: ExportLimits,
    mut encode: impl FnMut(&[Book], bool) -> T + Send + 'static,
    hold: impl Send + 'static,
) -> Result<impl Stream<Item = Result<T, ExportCut>> + 'static, ListBooksError> {
    let deadline = Instant::now() + limits.max_duration;
    let (sender, mut receiver) = mpsc::channel::<Result<T, ListBooksError>>(SLICES_IN_FLIGHT);
    let runtime = tokio::runtime::Handle::current();
    let complete = Arc::new(AtomicBool::new(false));
    let completed = Arc::clone(&complete);
    drop(tokio::task::spawn_blocking(move || {
        let _hold = hold;
        let mut first = true;
        // Hands one message to the reader; false once it has gone or stalled, or the export has
        // run out of time.
        let send = |message| {
            let patience = limits
                .stalled_reader
                .min(deadline.saturating_duration_since(Instant::now()));
            runtime
                .block_on(sender.send_timeout(message, patience))
                .is_ok()
        };
        // Why the export stopped before its end, if it did.
        let mut stopped: Option<&str> = None;
        let mut sink = |books: Vec<Book>| {
            if Instant::now() >= deadline {
                stopped = Some("took longer than it may");
                return ControlFlow::Break(());
            }
            let encoded = encode(&books, std::mem::take(&mut first));
            if send(Ok(encoded)) {
                ControlFlow::Continue(())
            } else {
                stopped = Some("lost its reader, or its reader stopped reading");
                ControlFlow::Break(())
            }
        };
        let exported = service.export_books(&query, &mut sink);
        match (exported, stopped) {
            (Ok(()), Some(why)) => tracing::info!(why, "an export is cut short"),
            (Ok(()), None) if first => {
                if send(Ok(encode(&[], true))) {
                    completed.store(true, Ordering::Release);
                }
            }
            (Ok(()), None) => completed.store(true, Ordering::Release),
            (Err(error), _) => drop(send(Err(error))),
        }
    }));
    // The first message decides: a failure before any slice is the caller's to answer.
    let first = match receiver.recv().await {
        Some(Err(error)) => return Err(error),
        first => first,
    };
    Ok(futures_util::stream::unfold(
        (first, Some(receiver), complete),
        |(next, receiver, complete)| async move {
            let mut receiver = receiver?;
            let item = match next {
                Some(item) => item,
                None => match receiver.recv().await {
                    Some(item) => item,
                    // Every slice sent: the stream ends.
                    None if complete.load(Ordering::Acquire) => return None,
                    // The export stopped short: the reader is told, then the stream ends.
                    None => return Some((Err(ExportCut::StoppedShort), (None, None, complete))),
                },
            };
            match item {
                Ok(slice) => Some((Ok(slice), (None, Some(receiver), complete))),
                Err(error) => Some((Err(ExportCut::Failed(error)), (None, None, complete))),
            }
        },
    ))
}
