//! Logging: to standard error, as text or JSON, filtered by `RUST_LOG`.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::LogFormat;

/// Starts logging in `format`, filtered by `RUST_LOG` (`info` when it is unset or empty).
///
/// # Errors
///
/// When `RUST_LOG` is not a filter: a typo there would otherwise silently hide the logs someone
/// is about to need.
pub fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec
            .parse::<Targets>()
            .with_context(|| format!("RUST_LOG={spec:?} is not a log filter (for example: info, warn, books_http=debug,info)"))?,
        _ => Targets::new().with_default(tracing::Level::INFO),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).init(),
        LogFormat::Text => registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .init(),
    }
    Ok(())
}
