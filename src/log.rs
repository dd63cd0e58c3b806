//! Why things failed, in words: one process-wide sink for messages about refused
//! inits and loads, `EIO`s and contract violations by a caller's device or codec.
//!
//! Quiet by default, as a library should be. A program installs its own sink
//! ([`set_sink`]; from C, `reduce_set_log_fn`), or sets the environment variable
//! `REDUCE_LOG` (to anything) to have messages printed on stderr. The same text is
//! what a Rust caller gets from the error's `Display`.

use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

/// How much a message matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// An operation failed: the message says which check, chunk or file.
    Error = 1,
    /// Something a caller did wrong that the library ignored (a second completion).
    Warn = 2,
}

impl Level {
    /// "error" or "warning".
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
        }
    }
}

/// Receives every message. Called on the thread that hit the condition.
pub type Sink = Arc<dyn Fn(Level, &str) + Send + Sync>;

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
static FROM_ENV: OnceLock<bool> = OnceLock::new();

/// Installs `sink` for the whole process (`None`: back to the default).
pub fn set_sink(sink: Option<Sink>) {
    *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
}

/// Delivers one message to the sink, or to stderr when `REDUCE_LOG` is set.
pub(crate) fn emit(level: Level, args: fmt::Arguments<'_>) {
    let sink = SINK.read().unwrap_or_else(|e| e.into_inner()).clone();
    match sink {
        Some(sink) => sink(level, &args.to_string()),
        None if *FROM_ENV.get_or_init(|| std::env::var_os("REDUCE_LOG").is_some()) => {
            eprintln!("reduce: {}: {args}", level.as_str())
        }
        None => {}
    }
}
