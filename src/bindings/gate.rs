//! The gate engine threads pass to enter the interpreter.
//!
//! Engine threads call into Python for logs and event callbacks at any time. Once the
//! interpreter finalizes, a thread that tries to take the GIL is terminated in the middle of
//! Rust code, which crashes the process. So every such call goes through [`with_python`], and
//! an `atexit` hook ([`close`]) shuts the gate and waits for the calls already inside to leave
//! before finalization begins. After that, logs and events are dropped.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use log::{Log, Metadata, Record};
use pyo3::prelude::*;

static CLOSED: AtomicBool = AtomicBool::new(false);
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// How long `close` waits for calls in progress (a callback stuck for longer is abandoned).
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Leaves the gate's count when dropped, even if the call panics.
struct Inside;

impl Inside {
    fn enter() -> Option<Inside> {
        INSIDE.fetch_add(1, Ordering::SeqCst);
        if CLOSED.load(Ordering::SeqCst) {
            INSIDE.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Inside)
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `f` with the GIL unless the interpreter is shutting down (then `None`).
pub(crate) fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    let _inside = Inside::enter()?;
    Some(Python::attach(f))
}

/// Shuts the gate and waits, with the GIL released, for the calls inside to finish.
/// Registered with `atexit` when the module loads.
#[pyfunction]
pub(crate) fn close(py: Python<'_>) {
    CLOSED.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = Instant::now() + DRAIN_LIMIT;
        while INSIDE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// The `log` bridge to Python's `logging` (pyo3-log), behind the gate.
pub(crate) struct GatedLogger(pub(crate) pyo3_log::Logger);

impl Log for GatedLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        !CLOSED.load(Ordering::SeqCst) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if let Some(_inside) = Inside::enter() {
            self.0.log(record);
        }
    }

    fn flush(&self) {}
}
