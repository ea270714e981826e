//! Logging: to standard error, as text or JSON, filtered by `RUST_LOG`.

use std::io::{BufWriter, IsTerminal as _, Write};
use std::time::Duration;

use anyhow::Context as _;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::LogFormat;

/// Lines waiting for the writer thread before a request that logs waits for it in turn.
const BUFFERED_LINES: usize = 65_536;

/// How long the writer thread rests after writing out every line waiting.
const NAP: Duration = Duration::from_millis(2);

/// Starts logging in `format`, filtered by `RUST_LOG` (`info` when it is unset or empty). Keep the
/// guard until the process ends: dropping it writes out the lines still waiting.
///
/// Lines are written by a thread of their own, in batches: the workers that answer requests never
/// make a `write` call (one per request, and a wait on standard error's lock, cost GET by id about
/// 5 % of the service's CPU: `docs/performance.md`), and a log reader that falls behind (a full
/// pipe) holds no request until 65,536 lines wait. Past that, requests wait rather than lines
/// being lost: an error's cause chain is the one line an operator cannot do without.
///
/// # Errors
///
/// When `RUST_LOG` is not a filter: a typo there would otherwise silently hide the logs someone
/// is about to need.
pub fn init_logging(format: LogFormat) -> anyhow::Result<WorkerGuard> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec
            .parse::<Targets>()
            .with_context(|| format!("RUST_LOG={spec:?} is not a log filter (for example: info, warn, books_http=debug,info)"))?,
        _ => Targets::new().with_default(tracing::Level::INFO),
    };
    let ansi = std::io::stderr().is_terminal();
    // The writer thread flushes whenever it has written every line waiting, then naps: a line
    // is never held back longer than it takes to write those before it, plus the nap.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("books-api-log")
        .finish(Napping(BufWriter::new(std::io::stderr())));
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).init(),
        LogFormat::Text => registry.with(layer.with_ansi(ansi)).init(),
    }
    Ok(guard)
}

/// The log thread's writer: after each batch is written out (the thread flushes when it finds
/// nothing more waiting) the thread sleeps for [`NAP`] before it waits for the next line.
///
/// A thread that waits on the channel is woken by whoever sends next: under load it woke once
/// every 8 to 16 lines, and each time took one of the two cores from a worker. Napping, it is not
/// waiting: the lines of the next 2 ms queue without waking anyone and are written together (at
/// most a few hundred under load, far from [`BUFFERED_LINES`]). Measured side by side: the log
/// thread's context switches per request 0.10-0.14 -> 0.02, the list page +2 to +5 %, GET by id
/// within the noise (`docs/performance.md`, fifteenth round).
struct Napping<W>(W);

impl<W: Write> Write for Napping<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()?;
        std::thread::sleep(NAP);
        Ok(())
    }
}
