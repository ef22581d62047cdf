"""SSP's web interface: ``streamlit run streamlit_app.py``.

Layout and widgets only. Everything that touches the engine lives in :mod:`ssp.ui.controller`,
which runs the server and the client in their own threads; this page reads its snapshots on a
timer (``st.fragment(run_every=...)``), so a click never waits for a refresh loop and engine
threads never touch ``st.session_state``.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import TYPE_CHECKING

import altair as alt
import streamlit as st

import ssp
from ssp import _native
from ssp.server import DEFAULT_SECRET, SHORT_SECRET_CHARS
from ssp.text import markdown_literal
from ssp.ui import (
    KEEP_CHOICES,
    ClientSettings,
    ConflictRow,
    Controller,
    FolderListing,
    ServerSettings,
    ServerSnapshot,
    SyncSnapshot,
    VersionRow,
    filter_rows,
    human_bytes,
    human_duration,
    human_rate,
    list_folder,
    shared_controller,
)
from ssp.ui.access import TOKEN_ENV, TOKEN_PARAM, host_refusal, token_refusal
from ssp.ui.folder import ensure_folder
from ssp.ui.humanize import UNKNOWN

if TYPE_CHECKING:
    from ssp._native import _Keep

DEFAULT_FOLDER = "~/SSP_Sync"
LOG_LINES_SHOWN = 200
# Versions listed with a Restore button each (newest first). (A comment: Streamlit would show a
# docstring here on the page.)
VERSIONS_SHOWN = 50
MODE_LABELS = {
    "two-way": "Two-way: send changes made here, take the server's",
    "pull": "Pull: take the server's changes (deletions too), send nothing",
    "push": "Push: send changes made here, take nothing",
}
CHUNK_SIZES = sorted(
    {ssp.CHUNK_SIZE}
    | {
        size
        for size in (4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20)
        if _native.MIN_CHUNK_SIZE <= size <= _native.MAX_CHUNK_SIZE
    }
)

st.set_page_config(page_title="SSP: SmartSync Protocol", page_icon=":material/sync:", layout="wide")

# Before anything else runs: a page reached by a name that is not this machine's (DNS rebinding:
# a web site whose name now resolves to 127.0.0.1) sees one line and nothing else. Widget
# callbacks and fragments of this session run only once this script has created them, which it
# never does past here, so no control works either (see ssp.ui.access).
_refusal = host_refusal(
    st.context.headers.to_dict(), st.get_option("server.allowedHosts") or ()
) or token_refusal(os.environ.get(TOKEN_ENV), st.query_params.get(TOKEN_PARAM))
if _refusal:
    st.text(_refusal)
    st.stop()

ctl: Controller = shared_controller()


# Settings are read from the widgets' session state, not from this run's variables: a button's
# callback runs before the page is redrawn, and must see a field edited just before the click.


def current_server_settings() -> ServerSettings:
    state = st.session_state
    folder_text = str(state.get("folder") or "").strip() or DEFAULT_FOLDER
    return ServerSettings(
        secret=str(state.get("secret", DEFAULT_SECRET)),
        folder=Path(folder_text).expanduser(),
        host=str(state.get("host") or "").strip() or "localhost",
        port=int(state.get("port") or 8888),
        chunk_size=int(state.get("chunk_size") or ssp.CHUNK_SIZE),
        read_only=bool(state.get("read_only", False)),
    )


def current_client_settings() -> ClientSettings:
    server = current_server_settings()
    state = st.session_state
    folder_text = str(state.get("client_folder") or "").strip()
    port_value = state.get("client_port")
    return ClientSettings(
        secret=server.secret,
        folder=Path(folder_text).expanduser() if folder_text else server.folder,
        host=str(state.get("client_host") or "").strip() or server.host,
        port=int(port_value) if port_value is not None else server.port,
        chunk_size=server.chunk_size,
        mode=state.get("sync_mode") or _native.SYNC_MODES[0],
    )


# -- sidebar: configuration ----------------------------------------------------------------

with st.sidebar:
    st.header(":material/settings: Configuration")
    secret = st.text_input(
        "Shared secret",
        value=DEFAULT_SECRET,
        type="password",
        key="secret",
        help="Server and client must use the same secret. It never crosses the network.",
    )
    if secret == DEFAULT_SECRET:
        st.warning(
            f"You are using the default secret `{DEFAULT_SECRET}`. Anyone who knows SSP knows "
            "it, and the server refuses it on any address but this machine's: change it (on "
            "both machines) before serving anything.",
            icon=":material/warning:",
        )
    elif not secret:
        st.error("Enter a shared secret.")
    elif len(secret) < SHORT_SECRET_CHARS:
        st.warning(
            f"This secret has {len(secret)} characters. It is the only thing between the network "
            f"and the folder: use at least {SHORT_SECRET_CHARS}, better a passphrase.",
            icon=":material/warning:",
        )
    host = st.text_input(
        "Host",
        value="localhost",
        key="host",
        help="The address the server listens on (0.0.0.0: every interface) and the server the "
        "client syncs from, unless the Client tab names another.",
    ).strip()
    port = int(
        st.number_input("Port", min_value=1, max_value=65535, value=8888, step=1, key="port")
    )
    folder_text = st.text_input(
        "Sync folder",
        value=DEFAULT_FOLDER,
        key="folder",
        help="The folder the server serves (created if missing).",
    ).strip()
    folder = Path(folder_text or DEFAULT_FOLDER).expanduser()
    folder_error = ensure_folder(folder)
    if folder_error:
        st.error(folder_error)
    elif str(folder) != folder_text:
        st.caption(f":material/folder: `{folder}`")
    chunk_size = int(
        st.select_slider(
            "Chunk size",
            options=CHUNK_SIZES,
            value=ssp.CHUNK_SIZE,
            format_func=human_bytes,
            key="chunk_size",
            help="Bytes per transfer frame. Larger chunks suit large files on fast links.",
        )
    )
    refresh_s = float(
        st.slider(
            "Auto-refresh interval (s)",
            min_value=0.5,
            max_value=10.0,
            value=1.0,
            step=0.5,
            key="refresh_s",
        )
    )

server_settings = current_server_settings()

st.title(":material/sync: SmartSync Protocol")
st.caption(
    f"SSP {ssp.__version__} · protocol v{ssp.PROTOCOL_VERSION} · authenticated, encrypted "
    f"folder sync"
)
server_tab, client_tab, monitoring_tab = st.tabs(
    [":material/dns: Server", ":material/laptop: Client", ":material/monitoring: Monitoring"]
)


def show_logs(title: str, lines: list[str], empty: str) -> None:
    """The last log lines, newest first (a fixed-height box would hide the newest at its end)."""
    st.subheader(title)
    if not lines:
        st.caption(empty)
        return
    st.caption(f"Last {len(lines)} lines, newest first.")
    with st.container(height=260, border=True):
        st.code("\n".join(reversed(lines)), language=None, wrap_lines=True)


# -- server tab ----------------------------------------------------------------------------

SERVER_BADGES = {
    "running": ":green[● Running]",
    "starting": ":orange[● Starting…]",
    "stopping": ":orange[● Stopping…]",
    "stopped": ":red[● Stopped]",
}


def start_server() -> None:
    ctl.server.start(current_server_settings())


@st.fragment(run_every=refresh_s)
def server_panel() -> None:
    snap: ServerSnapshot = ctl.server.snapshot()
    status_col, start_col, stop_col = st.columns([3, 1, 1], vertical_alignment="center")
    where = ""
    if snap.running:
        where = f" on `{snap.host}:{snap.port}`, serving `{snap.folder}`"
        if snap.uptime_s is not None:
            where += f" · up {human_duration(snap.uptime_s)}"
    if snap.running and snap.read_only:
        where += " · read-only"
    status_col.markdown(f"**Status:** {SERVER_BADGES[snap.state]}{where}")
    start_col.button(
        "Start Server",
        key="start_server",
        type="primary",
        disabled=snap.state != "stopped" or bool(folder_error),
        on_click=start_server,
        width="stretch",
    )
    stop_col.button(
        "Stop Server",
        key="stop_server",
        disabled=snap.state != "running",
        on_click=ctl.server.stop,
        width="stretch",
    )
    if snap.error and snap.state == "stopped":
        st.error(markdown_literal(snap.error), icon=":material/error:")
    if snap.running and (snap.host, snap.port, snap.folder, snap.read_only) != (
        server_settings.host,
        server_settings.port,
        str(server_settings.folder),
        server_settings.read_only,
    ):
        st.info(
            "The sidebar has changed: stop and start the server to apply it.",
            icon=":material/info:",
        )

    cols = st.columns(5)
    cols[0].metric("Active connections", snap.active_connections)
    cols[1].metric("Total connections", snap.total_connections)
    cols[2].metric("Files sent", snap.files_sent)
    cols[3].metric("Bytes sent", human_bytes(snap.bytes_sent))
    cols[4].metric("Sync sessions", snap.sync_sessions)
    if snap.auth_failures:
        st.caption(
            f":material/lock: {snap.auth_failures} connection(s) refused for a wrong secret."
        )

    st.subheader("Connected clients")
    if snap.clients:
        st.dataframe({"client": list(snap.clients)}, hide_index=True, width="stretch")
    else:
        st.caption("No client connected.")
    show_logs("Server logs", ctl.logs.lines("server", LOG_LINES_SHOWN), "No server activity yet.")


with server_tab:
    st.checkbox(
        "Read-only",
        value=False,
        key="read_only",
        help="Take no changes from clients: push syncs are refused, two-way clients only "
        "receive (like a send-only folder).",
    )
    server_panel()


# -- client tab ----------------------------------------------------------------------------

SYNC_BADGES = {
    "idle": ":gray[● Idle]",
    "connecting": ":orange[● Connecting…]",
    "syncing": ":blue[● Syncing…]",
    "completed": ":green[● Completed]",
    "failed": ":red[● Failed]",
    "cancelled": ":orange[● Stopped]",
}

with client_tab:
    target_col, port_col, folder_col = st.columns([2, 1, 3])
    target_col.text_input(
        "Server host",
        value="",
        placeholder=server_settings.host,
        key="client_host",
        help="The machine running the SSP server; empty: the sidebar's host.",
    )
    port_col.number_input(
        "Server port",
        min_value=1,
        max_value=65535,
        value=None,
        step=1,
        placeholder=str(port),
        key="client_port",
        help="Empty: the sidebar's port.",
    )
    folder_col.text_input(
        "Client folder",
        value="",
        placeholder=str(folder),
        key="client_folder",
        help="Where the client puts the server's files; empty: the sidebar's sync folder. "
        "Use another folder to run server and client in this one page.",
    )
    st.selectbox(
        "Mode",
        _native.SYNC_MODES,
        format_func=lambda mode: MODE_LABELS.get(mode, mode),
        key="sync_mode",
        help="Changes on both sides are conflicts: both versions are kept. Files a sync "
        "replaces or deletes are kept in the folder's versions (see Versions below).",
    )
    client_settings = current_client_settings()


def sync_summary(snap: SyncSnapshot) -> str:
    more = "".join(
        f", {count} {what}"
        for count, what in (
            (snap.files_sent, "sent"),
            (snap.files_deleted, "deleted"),
            (snap.files_unchanged, "unchanged"),
            (snap.conflicts, "conflict(s): see Conflicts below"),
        )
        if count
    )
    return (
        f"Synced {snap.files_received} file(s) ({human_bytes(snap.bytes_received)}){more} "
        f"with {snap.host}:{snap.port}, folder `{snap.folder}`, in "
        f"{human_duration(snap.duration_s)} ({snap.mode})."
    )


def show_not_synced(snap: SyncSnapshot) -> None:
    """The last sync's entries not synced and failures: named, with why (never silent)."""
    if not snap.not_synced or snap.active:
        return
    st.warning(
        f"{len(snap.not_synced)} entr{'y was' if len(snap.not_synced) == 1 else 'ies were'} "
        "not synced:",
        icon=":material/warning:",
    )
    st.dataframe(
        {
            "entry": [row.path for row in snap.not_synced],
            "why": [("failed: " if row.failed else "") + row.reason for row in snap.not_synced],
        },
        hide_index=True,
        width="stretch",
        key="not_synced",
    )


def start_sync() -> None:
    ctl.sync.start(current_client_settings())


@st.fragment(run_every=refresh_s)
def client_panel() -> None:
    snap: SyncSnapshot = ctl.sync.snapshot()
    server = ctl.server.snapshot()
    status_col, start_col, stop_col = st.columns([3, 1, 1], vertical_alignment="center")
    # Engine and peer text (statuses, errors, the server's file names) is shown literally:
    # Markdown in it (a link, a remote image) must never render (see ssp.text).
    detail = f" {markdown_literal(snap.details)}" if snap.details and snap.state != "failed" else ""
    status_col.markdown(f"**Status:** {SYNC_BADGES[snap.state]}{detail}")
    same_folder = (
        server.running
        and client_settings.port == server.port
        and client_settings.folder.resolve() == Path(server.folder).resolve()
    )
    start_col.button(
        "Start Sync",
        key="start_sync",
        type="primary",
        disabled=snap.active or same_folder,
        on_click=start_sync,
        width="stretch",
    )
    stop_col.button(
        "Stop Sync",
        key="stop_sync",
        disabled=not snap.active,
        on_click=ctl.sync.cancel,
        width="stretch",
    )
    if same_folder:
        st.warning(
            "The client folder is the folder this server serves. Enter another Client folder "
            "above to test server and client in one page.",
            icon=":material/warning:",
        )
    if snap.state == "failed" and snap.error:
        st.error(markdown_literal(snap.error), icon=":material/error:")
    elif snap.state == "cancelled":
        st.info(
            "Sync stopped. Files already received are kept; Start Sync resumes.",
            icon=":material/stop_circle:",
        )
    elif snap.state == "completed":
        st.success(sync_summary(snap), icon=":material/check_circle:")

    percent = int(snap.fraction * 100)
    st.progress(
        snap.fraction,
        text=f"Sync progress: {percent}% · {snap.files_done}/{snap.files_total} files · "
        f"{human_bytes(snap.bytes_done)} of {human_bytes(snap.bytes_total)}",
    )
    current = markdown_literal(snap.file_path) if snap.file_path else "none yet"
    chunks = f" · chunk {snap.chunk_index}/{snap.total_chunks}" if snap.total_chunks else ""
    st.progress(snap.file_fraction, text=f"Current file: {current}{chunks}")
    eta = f" · {human_duration(snap.eta_s)} left" if snap.active and snap.eta_s else ""
    st.caption(f"Rate: {human_rate(snap.rate_bps)}{eta}")

    show_not_synced(snap)

    cols = st.columns(4)
    cols[0].metric("Files received", snap.files_received)
    cols[1].metric("Bytes received", human_bytes(snap.bytes_received))
    cols[2].metric("Pending requests", snap.pending_requests)
    cols[3].metric("Duration", human_duration(snap.duration_s))
    show_logs("Client logs", ctl.logs.lines("client", LOG_LINES_SHOWN), "No sync yet.")


with client_tab:
    client_panel()


# -- conflicts and versions (client folder) -----------------------------------------------


def flash(ok: bool, text: str) -> None:
    st.session_state["history_message"] = (ok, text)


def resolve_conflict(copy: str, keep: _Keep) -> None:
    flash(*ctl.history(current_client_settings().folder).resolve(copy, keep))


def restore_version(path: str, at: float) -> None:
    flash(*ctl.history(current_client_settings().folder).restore(path, at))


def show_conflict(index: int, row: ConflictRow) -> None:
    with st.container(border=True):
        st.markdown(f"**{markdown_literal(row.this.path)}** was changed on two devices.")
        this_col, that_col = st.columns(2)
        this_col.markdown(
            f"**This** (at the name): {markdown_literal(row.this.describe())}"
            if not row.original_deleted
            else "**This** (at the name): deleted since"
        )
        that_col.markdown(
            f"**That** ({markdown_literal(row.that.path)}): {markdown_literal(row.that.describe())}"
        )
        for col, (keep, label) in zip(st.columns(len(KEEP_CHOICES)), KEEP_CHOICES):
            col.button(
                label,
                key=f"resolve_{keep}_{index}",
                on_click=resolve_conflict,
                args=(row.copy, keep),
                width="stretch",
            )


def show_version(index: int, row: VersionRow) -> None:
    path_col, kept_col, size_col, button_col = st.columns([4, 2, 1, 1], vertical_alignment="center")
    path_col.markdown(markdown_literal(row.shown_path))
    kept_col.caption(f"kept {row.kept} · modified {row.modified}")
    size_col.caption(row.size)
    button_col.button(
        "Restore",
        key=f"restore_{index}",
        on_click=restore_version,
        args=(row.path, row.archived_s),
        width="stretch",
    )


@st.fragment(run_every=max(refresh_s, 2.0))
def history_panel() -> None:
    history = ctl.history(current_client_settings().folder)
    message = st.session_state.pop("history_message", None)
    if message:
        ok, text = message
        (st.success if ok else st.error)(markdown_literal(text))

    st.subheader(":material/call_split: Conflicts")
    conflicts, error = history.conflicts()
    if error:
        st.error(markdown_literal(error), icon=":material/error:")
    if conflicts:
        st.caption(
            "Both versions were kept; the other one is a `.sync-conflict-` copy. Keep this "
            "(the file at the name), that (the copy) or both. What goes is kept in versions."
        )
        for index, conflict in enumerate(conflicts):
            show_conflict(index, conflict)
    elif not error:
        st.caption("No conflicts in the client folder.")

    st.subheader(":material/history: Versions")
    versions, error = history.versions()
    if error:
        st.error(markdown_literal(error), icon=":material/error:")
    if versions:
        st.caption(
            "Files a sync replaced or deleted, newest first. Restore puts one back (the "
            "current file is kept as a version first); the next sync carries it."
        )
        for index, version in enumerate(versions[:VERSIONS_SHOWN]):
            show_version(index, version)
        if len(versions) > VERSIONS_SHOWN:
            st.caption(f"Showing the newest {VERSIONS_SHOWN} of {len(versions)} versions.")
    elif not error:
        st.caption("No versions kept in the client folder yet.")


with client_tab:
    history_panel()


# -- monitoring tab ------------------------------------------------------------------------


@st.cache_data(ttl=3, show_spinner=False)
def cached_listing(path: str) -> FolderListing:
    """A folder's listing, walked at most every few seconds however many tabs refresh it."""
    return list_folder(path)


@st.fragment(run_every=refresh_s)
def monitoring_panel() -> None:
    folders = {"Sync folder": folder}
    if client_settings.folder != folder:
        folders["Client folder"] = client_settings.folder
    choice = st.radio("Folder", list(folders), horizontal=True, key="monitor_folder")
    shown = folders.get(choice or "Sync folder", folder)
    listing = cached_listing(str(shown))

    st.subheader(":material/folder: Files")
    st.caption(f"`{listing.folder}`")
    if listing.error:
        st.warning(listing.error)
    cols = st.columns(3)
    cols[0].metric("Files", listing.total_files)
    cols[1].metric("Total size", human_bytes(listing.total_bytes))
    average = listing.average_size
    cols[2].metric("Average file size", human_bytes(average) if average is not None else UNKNOWN)
    query = st.text_input("Search files", key="file_search", placeholder="part of a path")
    rows = filter_rows(listing.files, query)
    if rows:
        st.dataframe(
            {
                "file": [row.path for row in rows],
                "size": [human_bytes(row.size) for row in rows],
                "bytes": [row.size for row in rows],
                "modified": [dt.datetime.fromtimestamp(row.modified) for row in rows],
            },
            hide_index=True,
            width="stretch",
            column_config={
                "modified": st.column_config.DatetimeColumn(
                    "modified", format="YYYY-MM-DD HH:mm:ss"
                )
            },
        )
    elif listing.total_files:
        st.caption("No file matches the search.")
    else:
        st.caption("The folder is empty." if listing.exists else "The folder does not exist yet.")
    if listing.truncated:
        st.caption(f"Showing the first {len(listing.files)} of {listing.total_files} files.")

    info_col, perf_col = st.columns(2)
    with info_col:
        st.subheader(":material/info: System")
        st.markdown(
            f"- Protocol version: **{ssp.PROTOCOL_VERSION}**\n"
            f"- SSP version: **{ssp.__version__}**\n"
            f"- Chunk size: **{human_bytes(chunk_size)}**\n"
            f"- Time: **{dt.datetime.now():%Y-%m-%d %H:%M:%S}**"
        )
    server = ctl.server.snapshot()
    sync = ctl.sync.snapshot()
    with perf_col:
        st.subheader(":material/speed: Performance")
        per_session = server.files_per_session
        st.markdown(
            f"- Average files per session: "
            f"**{f'{per_session:.1f}' if per_session is not None else UNKNOWN}**\n"
            f"- Average file size: "
            f"**{human_bytes(average) if average is not None else UNKNOWN}**\n"
            f"- Transfer speed (last sync): **{human_rate(sync.average_rate)}**"
        )
    st.subheader(":material/show_chart: Throughput")
    points = ctl.throughput()
    if points:
        chart_rows = [
            {
                "order": order,
                "time": dt.datetime.fromtimestamp(p.time).isoformat(),
                "series": p.series,
                "rate": p.bytes_per_s / (1 << 20),
            }
            for order, p in enumerate(points)
        ]
        chart = (
            alt.Chart(alt.InlineData(values=chart_rows))
            .mark_line()
            .encode(
                x=alt.X("time:T", title=None, axis=alt.Axis(format="%H:%M:%S")),
                y=alt.Y("rate:Q", title="MiB/s"),
                color=alt.Color("series:N", title=None, legend=alt.Legend(orient="top")),
                # The outline has two points per instant (a step): keep the data's order.
                order=alt.Order("order:Q"),
            )
            .properties(height=240)
        )
        st.altair_chart(chart, width="stretch")
    else:
        st.caption("No transfer yet: the chart fills while the server serves or a sync runs.")


with monitoring_tab:
    monitoring_panel()
