"""The web interface's engine side: everything ``streamlit_app.py`` shows, without Streamlit.

Layout:

- :mod:`ssp.ui.humanize` formats sizes, rates and durations for people.
- :mod:`ssp.ui.messages` turns engine errors into one actionable line each.
- :mod:`ssp.ui.folder` lists a sync folder (files, sizes, modified times) and filters it.
- :mod:`ssp.ui.history` shows a folder's conflicts and kept versions and resolves or restores
  them, and the last sync's entries not synced.
- :mod:`ssp.ui.access` decides who may drive the page: the Host/Origin check against DNS
  rebinding and the optional access token per launch (``python -m ssp.ui``, see
  :mod:`ssp.ui.__main__`).
- :mod:`ssp.ui.controller` owns the server and the client, each in its own thread with its own
  event loop, and records logs, progress and throughput; the page only reads its snapshots.

Nothing here imports Streamlit, so all of it is tested with plain pytest.
"""

from ssp.ui.controller import (
    ClientSettings,
    Controller,
    LogBuffer,
    ServerSettings,
    ServerSnapshot,
    SyncSnapshot,
    ThroughputPoint,
    close_shared_controller,
    shared_controller,
)
from ssp.ui.folder import FileRow, FolderListing, filter_rows, list_folder
from ssp.ui.history import (
    KEEP_CHOICES,
    ConflictRow,
    FolderHistory,
    NotSynced,
    VersionRow,
)
from ssp.ui.humanize import human_bytes, human_duration, human_rate
from ssp.ui.messages import explain

__all__ = [
    "KEEP_CHOICES",
    "ClientSettings",
    "ConflictRow",
    "Controller",
    "FileRow",
    "FolderHistory",
    "FolderListing",
    "LogBuffer",
    "NotSynced",
    "ServerSettings",
    "ServerSnapshot",
    "SyncSnapshot",
    "ThroughputPoint",
    "VersionRow",
    "close_shared_controller",
    "explain",
    "filter_rows",
    "human_bytes",
    "human_duration",
    "human_rate",
    "list_folder",
    "shared_controller",
]
