//! Engine futures as asyncio futures.
//!
//! Each call returns a future of the caller's running event loop; the engine runs the work on
//! its own runtime and hands the outcome back with `loop.call_soon_threadsafe`. That hand-over
//! goes through the [gate](super::gate), because `call_soon_threadsafe` releases the GIL while
//! it wakes the loop: the loop may then finish and the interpreter begin to finalize while the
//! engine thread still has to re-enter it (pyo3-async-runtimes' `future_into_py` crashes there;
//! its runtime is still the one used). Cancelling the asyncio future aborts the engine task.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use pyo3::prelude::*;
use serde_json::Value;
use tokio::task::AbortHandle;

use super::{gate, to_object, to_py, SSPError};
use crate::error::Error;

/// Runs `work` on the engine's runtime; returns an asyncio future for its outcome, converted
/// from JSON (`Value::Null` is `None`) or raised as the error's exception class.
pub(crate) fn awaitable<'py, F>(py: Python<'py>, work: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<Value, Error>> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let (loop_ref, future_ref) = (event_loop.unbind(), future.clone().unbind());
    let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let outcome = AssertUnwindSafe(work).catch_unwind().await;
        // If the interpreter is shutting down nobody waits any more: the outcome is dropped.
        gate::with_python(move |py| {
            let (ok, value) = match outcome {
                Ok(Ok(v)) => match to_object(py, &v) {
                    Ok(obj) => (true, obj),
                    Err(e) => (false, e.into_value(py).into_bound(py).into_any()),
                },
                Ok(Err(e)) => (false, to_py(e).into_value(py).into_bound(py).into_any()),
                Err(_) => {
                    let e = SSPError::new_err("internal error: the engine task panicked");
                    (false, e.into_value(py).into_bound(py).into_any())
                }
            };
            let scheduled = wrap_pyfunction!(complete, py).and_then(|complete| {
                loop_ref.bind(py).call_method1(
                    "call_soon_threadsafe",
                    (complete, future_ref.bind(py), ok, value),
                )
            });
            if let Err(e) = scheduled {
                // The loop was closed: its caller gave up waiting.
                tracing::debug!("could not hand a result to its event loop: {e}");
            }
        });
    });
    future.call_method1("add_done_callback", (AbortOnCancel(task.abort_handle()),))?;
    Ok(future)
}

/// Settles `future` on its loop's thread, unless it was cancelled meanwhile.
#[pyfunction]
fn complete(future: &Bound<'_, PyAny>, ok: bool, value: Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    let method = if ok { "set_result" } else { "set_exception" };
    future.call_method1(method, (value,))?;
    Ok(())
}

/// Done-callback of the asyncio future: a cancelled await stops the engine task.
#[pyclass(frozen)]
struct AbortOnCancel(AbortHandle);

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.0.abort();
        }
        Ok(())
    }
}
