//! Logging setup: structured events, filtered by `RUST_LOG` (default `info`), on stderr so that stdout
//! stays free for command output (`rewrap` prints its report there).
//!
//! Lines are written by a dedicated thread through a buffer flushed whenever the queue runs dry: a request
//! never waits on a `write` system call (one per log line took about a tenth of the gateway's CPU under
//! load). The queue holds 128k lines and then makes loggers wait rather than drop lines.

use std::io::{BufWriter, Stderr};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Keep it alive until the process ends: dropping it writes out every queued line.
#[must_use = "dropping the guard stops logging"]
pub struct LogGuard {
    _flushes_on_drop: WorkerGuard,
}

pub fn init(format: LogFormat) -> LogGuard {
    let buffered: BufWriter<Stderr> = BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default().lossy(false).thread_name("log-writer").finish(buffered);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer),
            )
            .init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer().with_writer(writer)).init(),
    }
    LogGuard { _flushes_on_drop: guard }
}
