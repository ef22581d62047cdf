//! The PyO3 module `ssp._native`: thin handles over the engine. Arguments are copied into owned
//! Rust values, the GIL is released while the engine works, and Python is re-entered only for
//! throttled event callbacks. One process-wide tokio runtime (pyo3-async-runtimes') runs it all.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString};
use serde_json::{json, Value};

mod awaitable;
mod gate;

use crate::error::{Error, ErrorKind};
use crate::fs::DEFAULT_VERSIONS_KEEP_DAYS;
use crate::fs::{RelPath, METADATA_DIR};
use crate::progress::{Event, EventSink, Status};
use crate::protocol::{
    SyncMode, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MAX_PEER_TEXT_CHARS, MIN_CHUNK_SIZE,
    PROTOCOL_VERSION,
};
use crate::sync::{Client, ClientConfig, Keep, Server, ServerConfig, SyncReport};
use awaitable::awaitable;

create_exception!(
    ssp._native,
    SSPError,
    PyException,
    "Base class of every SSP engine error."
);
create_exception!(
    ssp._native,
    AuthError,
    SSPError,
    "The peer does not share our secret."
);
create_exception!(
    ssp._native,
    ProtocolError,
    SSPError,
    "The peer broke the protocol."
);
create_exception!(ssp._native, PathError, SSPError, "A path was rejected.");
create_exception!(
    ssp._native,
    AddressInUseError,
    SSPError,
    "The port is already in use."
);
create_exception!(
    ssp._native,
    FolderError,
    SSPError,
    "The sync folder is unusable."
);
create_exception!(
    ssp._native,
    SSPConnectionError,
    SSPError,
    "Connection refused, lost or timed out."
);
create_exception!(
    ssp._native,
    DiskError,
    SSPError,
    "A local disk operation failed."
);

create_exception!(
    ssp._native,
    ConfigError,
    SSPError,
    "The configuration is unsafe or unusable (an empty secret, the default secret beyond loopback)."
);

/// Maps an engine error to its Python exception (one class per kind).
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e.kind() {
        ErrorKind::Auth => AuthError::new_err(msg),
        ErrorKind::Protocol => ProtocolError::new_err(msg),
        ErrorKind::Path => PathError::new_err(msg),
        ErrorKind::AddressInUse => AddressInUseError::new_err(msg),
        ErrorKind::Folder => FolderError::new_err(msg),
        ErrorKind::Connection => SSPConnectionError::new_err(msg),
        ErrorKind::Disk => DiskError::new_err(msg),
        ErrorKind::Config => ConfigError::new_err(msg),
        _ => SSPError::new_err(msg),
    }
}

/// Converts JSON to plain Python objects (dict, list, str, int, float, bool, None).
fn to_object<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_pyobject(py)?.into_any(),
            (_, Some(i)) => i.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(0.0).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_object(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, to_object(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

fn snapshot<'py, T: serde::Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyAny>> {
    let v = serde_json::to_value(value).map_err(|e| SSPError::new_err(e.to_string()))?;
    to_object(py, &v)
}

/// Wraps a Python callable `fn(kind, payload)` as an engine event sink. Exceptions it raises
/// are logged, never propagated into the engine.
fn event_sink(callback: Option<Py<PyAny>>) -> Option<EventSink> {
    let callback = callback?;
    Some(Arc::new(move |event: Event| {
        let (kind, payload) = match event {
            Event::Status { status, details } => (
                "status",
                json!({"status": status.as_str(), "details": details}),
            ),
            Event::Progress(p) => ("progress", serde_json::to_value(p).unwrap_or(Value::Null)),
        };
        let result = gate::with_python(|py| {
            to_object(py, &payload)
                .and_then(|obj| callback.call1(py, (kind, obj)))
                .map(drop)
        });
        if let Some(Err(e)) = result {
            tracing::warn!("event callback raised: {e}");
        }
    }))
}

fn check_chunk_size(chunk_size: usize) -> PyResult<usize> {
    if (MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
        Ok(chunk_size)
    } else {
        Err(PyValueError::new_err(format!(
            "chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes, got {chunk_size}"
        )))
    }
}

fn parse_mode(mode: &str) -> PyResult<SyncMode> {
    SyncMode::parse(mode).ok_or_else(|| {
        let names: Vec<&str> = SyncMode::ALL.iter().map(|m| m.as_str()).collect();
        PyValueError::new_err(format!(
            "mode must be one of {}, got {mode:?}",
            names.join(", ")
        ))
    })
}

/// Days to keep versions as the engine's setting: `None` or 0 turn versioning off.
fn versions_keep(days: Option<f64>) -> PyResult<Option<Duration>> {
    match days {
        None | Some(0.0) => Ok(None),
        Some(d) => Duration::try_from_secs_f64(d * 86_400.0)
            .map(Some)
            .map_err(|_| {
                PyValueError::new_err(format!(
                    "keep_versions_days must be a positive number of days, 0 or None, got {d}"
                ))
            }),
    }
}

/// Unix seconds (a Python float) as a time.
fn unix_time(seconds: f64) -> PyResult<SystemTime> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
        .ok_or_else(|| {
            PyValueError::new_err(format!(
                "at must be unix seconds (0 or more), got {seconds}"
            ))
        })
}

/// One entry a sync did not take, or a change that failed, as Python sees it.
#[derive(serde::Serialize)]
struct PathReason<'a> {
    path: &'a str,
    reason: &'a str,
}

/// The last sync's report as JSON; failures become `{path, reason}` like skipped entries.
fn report_json(report: &SyncReport) -> Value {
    let entries = |list: &[crate::fs::Skipped]| -> Vec<Value> {
        list.iter()
            .map(|s| {
                json!(PathReason {
                    path: &s.path,
                    reason: &s.reason
                })
            })
            .collect()
    };
    let failed: Vec<Value> = report
        .failed
        .iter()
        .map(|(path, reason)| json!(PathReason { path, reason }))
        .collect();
    json!({
        "conflicts": serde_json::to_value(&report.conflicts).unwrap_or(Value::Null),
        "skipped": entries(&report.skipped),
        "warnings": entries(&report.warnings),
        "failed": failed,
    })
}

fn to_json<T: serde::Serialize>(value: T) -> Result<Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::Store(e.to_string()))
}

/// A sync server handle (see `_native.pyi`).
#[pyclass(frozen, module = "ssp._native")]
struct NativeServer {
    inner: Arc<Server>,
}

#[pymethods]
impl NativeServer {
    #[new]
    #[pyo3(
        signature = (shared_secret, sync_folder, host = "localhost".to_owned(), port = 8888, chunk_size = DEFAULT_CHUNK_SIZE, *, read_only = false, keep_versions_days = Some(DEFAULT_VERSIONS_KEEP_DAYS as f64)),
        text_signature = "(shared_secret, sync_folder, host='localhost', port=8888, chunk_size=524288, *, read_only=False, keep_versions_days=30.0)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        shared_secret: String,
        sync_folder: PathBuf,
        host: String,
        port: u16,
        chunk_size: usize,
        read_only: bool,
        keep_versions_days: Option<f64>,
    ) -> PyResult<Self> {
        let mut config = ServerConfig::new(shared_secret, sync_folder, host, port);
        config.chunk_size = check_chunk_size(chunk_size)?;
        config.read_only = read_only;
        config.versions_keep = versions_keep(keep_versions_days)?;
        Ok(Self {
            inner: Arc::new(Server::new(config)),
        })
    }

    fn bind<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let server = Arc::clone(&self.inner);
        awaitable(py, async move { Ok(server.bind().await?.port().into()) })
    }

    fn serve<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let server = Arc::clone(&self.inner);
        awaitable(
            py,
            async move { server.serve().await.map(|()| Value::Null) },
        )
    }

    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let server = Arc::clone(&self.inner);
        awaitable(py, async move {
            server.stop().await;
            Ok(Value::Null)
        })
    }

    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // The engine's locks are taken with the GIL released: an engine thread holding one of
        // them may be waiting for the GIL to deliver an event.
        let status = py.detach(|| self.inner.status());
        snapshot(py, &status)
    }
}

/// A sync client handle (see `_native.pyi`).
#[pyclass(frozen, module = "ssp._native")]
struct NativeClient {
    inner: Arc<Client>,
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(
        signature = (shared_secret, sync_folder, server_host = "localhost".to_owned(), server_port = 8888, chunk_size = None, *, mode = "two-way", allow_mass_delete = false, keep_versions_days = Some(DEFAULT_VERSIONS_KEEP_DAYS as f64)),
        text_signature = "(shared_secret, sync_folder, server_host='localhost', server_port=8888, chunk_size=None, *, mode='two-way', allow_mass_delete=False, keep_versions_days=30.0)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        shared_secret: String,
        sync_folder: PathBuf,
        server_host: String,
        server_port: u16,
        chunk_size: Option<usize>,
        mode: &str,
        allow_mass_delete: bool,
        keep_versions_days: Option<f64>,
    ) -> PyResult<Self> {
        let mut config = ClientConfig::new(shared_secret, sync_folder, server_host, server_port);
        if let Some(size) = chunk_size {
            config.chunk_size = check_chunk_size(size)?;
        }
        config.mode = parse_mode(mode)?;
        config.allow_mass_delete = allow_mass_delete;
        config.versions_keep = versions_keep(keep_versions_days)?;
        Ok(Self {
            inner: Arc::new(Client::new(config)),
        })
    }

    #[pyo3(signature = (on_event = None))]
    fn connect<'py>(
        &self,
        py: Python<'py>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = Arc::clone(&self.inner);
        let sink = event_sink(on_event);
        awaitable(py, async move {
            client.connect(sink.as_ref()).await.map(|()| Value::Null)
        })
    }

    #[pyo3(signature = (on_event = None))]
    fn sync<'py>(
        &self,
        py: Python<'py>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = Arc::clone(&self.inner);
        let sink = event_sink(on_event);
        awaitable(py, async move {
            let stats = client.sync(sink.as_ref()).await?;
            serde_json::to_value(stats).map_err(|e| Error::Store(e.to_string()))
        })
    }

    /// Connects if needed, syncs and disconnects, blocking this thread with the GIL released.
    /// A signal (Ctrl-C) cancels the sync and raises. For the command line: no event loop.
    #[pyo3(signature = (on_event = None))]
    fn pull_blocking<'py>(
        &self,
        py: Python<'py>,
        on_event: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        use std::sync::mpsc::RecvTimeoutError;
        let client = Arc::clone(&self.inner);
        let sink = event_sink(on_event);
        let (tx, rx) = std::sync::mpsc::channel();
        let task = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let result = client.sync(sink.as_ref()).await;
            client.disconnect(None).await;
            let _ = tx.send(result);
        });
        // A Mutex makes the receiver `Sync`, which `detach` asks of what it borrows.
        let rx = std::sync::Mutex::new(rx);
        let wait = || match rx.lock() {
            Ok(rx) => rx.recv_timeout(std::time::Duration::from_millis(100)),
            Err(_) => Err(RecvTimeoutError::Disconnected),
        };
        loop {
            match py.detach(wait) {
                Ok(result) => return snapshot(py, &result.map_err(to_py)?),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(interrupted) = py.check_signals() {
                        self.inner.cancel();
                        task.abort();
                        return Err(interrupted);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(SSPError::new_err(
                        "internal error: the engine task ended without a result",
                    ))
                }
            }
        }
    }

    fn cancel(&self) {
        self.inner.cancel();
    }

    fn disconnect<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = Arc::clone(&self.inner);
        awaitable(py, async move {
            client.disconnect(None).await;
            Ok(Value::Null)
        })
    }

    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // The engine's locks are taken with the GIL released: an engine thread holding one of
        // them may be waiting for the GIL to deliver an event.
        let status = py.detach(|| self.inner.status());
        snapshot(py, &status)
    }

    /// Conflicts, entries not synced and failures of the last sync.
    fn report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let report = py.detach(|| self.inner.report());
        to_object(py, &report_json(&report))
    }

    fn conflicts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let client = Arc::clone(&self.inner);
        awaitable(py, async move { to_json(client.conflicts().await?) })
    }

    fn resolve<'py>(
        &self,
        py: Python<'py>,
        copy: String,
        keep: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keep = Keep::parse(keep).ok_or_else(|| {
            PyValueError::new_err(format!(
                "keep must be 'original', 'copy' or 'both', got {keep:?}"
            ))
        })?;
        let client = Arc::clone(&self.inner);
        awaitable(py, async move {
            client.resolve(copy, keep).await.map(|()| Value::Null)
        })
    }

    #[pyo3(signature = (path = None))]
    fn versions<'py>(&self, py: Python<'py>, path: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let client = Arc::clone(&self.inner);
        awaitable(py, async move { to_json(client.versions(path).await?) })
    }

    #[pyo3(signature = (path, at = None))]
    fn restore<'py>(
        &self,
        py: Python<'py>,
        path: String,
        at: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let at = at.map(unix_time).transpose()?;
        let client = Arc::clone(&self.inner);
        awaitable(py, async move { to_json(client.restore(path, at).await?) })
    }
}

/// One scanned file as Python sees it: (path, size, hex hash, mtime seconds, executable).
type ScannedFile = (String, u64, String, f64, bool);

/// Tunes glibc's malloc for bulk transfers in a process of our own (the CLI): keep freed chunk
/// buffers instead of handing them back to the kernel and faulting them in again. Measured on a
/// 512 MiB file, interleaved 8 rounds: client CPU -14 %, server CPU -10 %, client RSS +6 MB.
/// Process-wide, so library users are left alone: only `ssp-client`/`ssp-server` call it.
/// Returns whether anything was changed (false off glibc).
#[pyfunction]
fn tune_allocator_for_transfers() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// Allocations up to this size come from the heap, not from a fresh mmap each.
        const MMAP_THRESHOLD_BYTES: libc::c_int = 16 << 20;
        /// Free memory kept at the top of a heap before any is returned to the kernel.
        const TRIM_THRESHOLD_BYTES: libc::c_int = 256 << 20;
        // SAFETY: mallopt only sets allocator parameters; any values are valid to pass.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Scans a folder with its hash cache.
#[pyfunction]
fn scan_folder(py: Python<'_>, folder: PathBuf) -> PyResult<Vec<ScannedFile>> {
    let scanned = py.detach(move || {
        // Through the folder's one model (shared with a server or client of it in this
        // process); a scan records local changes exactly as the next sync's would.
        let folder = crate::sync::Folder::open(&folder, false)?;
        let keep = crate::sync::days(crate::sync::DEFAULT_TOMBSTONE_KEEP_DAYS);
        // Like a sync's scan, this records local changes, so the mass-deletion guard applies:
        // a listing must not turn a vanished folder into tombstones a later sync would send.
        let (_, index) = folder.scan(false, keep)?;
        let mut files = Vec::new();
        for r in index.records()? {
            let r = r?;
            if !r.deleted && r.kind == crate::index::EntryKind::File {
                let hash = r.hash.to_hex();
                files.push((r.path, r.size, hash, r.mtime_ns as f64 / 1e9, r.executable));
            }
        }
        Ok::<_, crate::error::Error>(files)
    });
    scanned.map_err(to_py)
}

/// `text` as one line safe to show people (control and bidi characters escaped as `\\u{..}`),
/// cut to `max_chars` characters: the engine's own rule for peer text, for the CLI, logs and page.
#[pyfunction]
#[pyo3(signature = (text, max_chars = MAX_PEER_TEXT_CHARS))]
fn printable(text: &str, max_chars: usize) -> String {
    crate::protocol::printable(text, max_chars)
}

/// Returns `path` if it is an acceptable relative sync path, else raises `PathError`.
#[pyfunction]
fn validate_path(path: &str) -> PyResult<String> {
    RelPath::parse(path)
        .map(|p| p.as_str().to_owned())
        .map_err(to_py)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Engine logs (tracing, bridged through `log`) go to Python's logging as `ssp.*` loggers.
    // Levels are not cached, so `logging.basicConfig(level=...)` after import takes effect.
    // Behind the gate: no engine thread enters the interpreter once it starts to finalize.
    if let Ok(logger) = pyo3_log::Logger::new(py, pyo3_log::Caching::Loggers) {
        if log::set_boxed_logger(Box::new(gate::GatedLogger(logger))).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    }
    let close = wrap_pyfunction!(gate::close, m)?;
    py.import("atexit")?.call_method1("register", (&close,))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("PROTOCOL_VERSION", PROTOCOL_VERSION)?;
    m.add("DEFAULT_CHUNK_SIZE", DEFAULT_CHUNK_SIZE)?;
    m.add("MIN_CHUNK_SIZE", MIN_CHUNK_SIZE)?;
    m.add("MAX_CHUNK_SIZE", MAX_CHUNK_SIZE)?;
    m.add("METADATA_DIR", METADATA_DIR)?;
    m.add("DEFAULT_SECRET", crate::DEFAULT_SECRET)?;
    m.add(
        "SHORT_SECRET_CHARS",
        crate::sync::admission::SHORT_SECRET_CHARS,
    )?;
    m.add("MAX_PEER_TEXT_CHARS", MAX_PEER_TEXT_CHARS)?;
    m.add("DEFAULT_VERSIONS_KEEP_DAYS", DEFAULT_VERSIONS_KEEP_DAYS)?;
    let modes: Vec<&str> = SyncMode::ALL.iter().map(|m| m.as_str()).collect();
    m.add("SYNC_MODES", pyo3::types::PyTuple::new(py, modes)?)?;
    let statuses: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    m.add("STATUSES", pyo3::types::PyTuple::new(py, statuses)?)?;
    m.add("SSPError", py.get_type::<SSPError>())?;
    m.add("AuthError", py.get_type::<AuthError>())?;
    m.add("ProtocolError", py.get_type::<ProtocolError>())?;
    m.add("PathError", py.get_type::<PathError>())?;
    m.add("AddressInUseError", py.get_type::<AddressInUseError>())?;
    m.add("FolderError", py.get_type::<FolderError>())?;
    m.add("SSPConnectionError", py.get_type::<SSPConnectionError>())?;
    m.add("DiskError", py.get_type::<DiskError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add_class::<NativeServer>()?;
    m.add_class::<NativeClient>()?;
    m.add_function(wrap_pyfunction!(scan_folder, m)?)?;
    m.add_function(wrap_pyfunction!(tune_allocator_for_transfers, m)?)?;
    m.add_function(wrap_pyfunction!(validate_path, m)?)?;
    m.add_function(wrap_pyfunction!(printable, m)?)?;
    Ok(())
}
