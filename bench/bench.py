#!/usr/bin/env python3
"""SSP benchmark: ssp-client vs rsync (daemon on loopback) vs cp -a, on tmpfs.

One run generates deterministic, incompressible source trees under a fresh temporary
folder on tmpfs (/dev/shm), then for each workload times every tool in interleaved
rounds (round 1: ssp, rsync, cp; round 2: rsync, cp, ssp; ...), verifies every timed
result against the source, and prints median times and ratios.

Workloads (a, b, c by default; the scale workloads d-g only when asked for)
  a  10,000 files of 1-8 KiB in 100 folders, into an empty destination
  b  one 512 MiB file, into an empty destination
  c  re-sync of the unchanged tree of (a) into a destination that already has it (no-op)
  d  100,000 files of 1-8 KiB in 1,000 folders, into an empty destination   (alias: 100k = d,e)
  e  no-op re-sync of (d)
  f  1,000,000 files of 0-64 bytes in 1,000 folders, into an empty destination (alias: 1m = f,g)
  g  no-op re-sync of (f)

Besides time and CPU, every run records the peak RSS of the client and of the server.

Python 3.9+, standard library only.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

ALL_TOOLS = ("ssp", "rsync", "cp")
ALL_WORKLOADS = ("a", "b", "c", "d", "e", "f", "g")
DEFAULT_WORKLOADS = "a,b,c"  # the scale workloads take minutes: only when asked for
WORKLOAD_ALIASES = {"100k": ("d", "e"), "1m": ("f", "g"), "scale": ("d", "e", "f", "g")}
TARGET_RATIO = 1.5  # issue #2: ssp time <= 1.5 x rsync time (workloads a-c)
# Peak RSS is sampled this often on the server side (the client's comes from wait4).
RSS_SAMPLE_INTERVAL_S = 0.05
# A tmpfs file takes whole pages, and an inode each; used to check the space before starting.
PAGE_BYTES = 4096
# GNU time measures the client's peak RSS (Debian package "time"); without it: none.
TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
META_DIR = ".ssp"  # SSP's metadata folder (hash cache); never synced, excluded everywhere
SECRET = "ssp-bench-secret-0123456789"
MIB = 1 << 20
SSP_REPORTED = re.compile(r" in ([0-9.]+) s from ")
KIB = 1 << 10


# --------------------------------------------------------------------------- output helpers


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure that stops the benchmark (wrong result, tool crash, setup problem)."""


# --------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    key: str
    title: str
    source: str  # name of the source tree (a and c share one)
    noop: bool  # destination pre-populated, time the re-run
    # ssp time / rsync time the workload should meet (None: no time target).
    target_ratio: float | None = TARGET_RATIO
    # Peak RSS each ssp process (client, server) should stay under (None: no target).
    rss_target_mib: float | None = None
    # Rounds when --rounds is not given (None: the global default); the 1M workloads take
    # minutes per run.
    default_rounds: int | None = None
    # Files hashed per check when --verify-sample is not given (0: all); walking and
    # comparing sizes still covers every file.
    default_sample: int = 0


@dataclass
class SourceSpec:
    name: str
    files: int
    folders: int
    min_size: int
    max_size: int
    seed: int


def source_specs(quick: bool) -> dict[str, SourceSpec]:
    if quick:
        return {
            "small": SourceSpec("small", 1000, 10, 1 * KIB, 8 * KIB, 1),
            "big": SourceSpec("big", 1, 1, 32 * MIB, 32 * MIB, 2),
            "many": SourceSpec("many", 5_000, 50, 1 * KIB, 8 * KIB, 3),
            "tiny": SourceSpec("tiny", 20_000, 20, 0, 64, 4),
        }
    return {
        "small": SourceSpec("small", 10_000, 100, 1 * KIB, 8 * KIB, 1),
        "big": SourceSpec("big", 1, 1, 512 * MIB, 512 * MIB, 2),
        "many": SourceSpec("many", 100_000, 1_000, 1 * KIB, 8 * KIB, 3),
        "tiny": SourceSpec("tiny", 1_000_000, 1_000, 0, 64, 4),
    }


def workloads(specs: dict[str, SourceSpec]) -> dict[str, Workload]:
    s, b, m, t = specs["small"], specs["big"], specs["many"], specs["tiny"]
    return {
        "a": Workload("a", f"{s.files:,} files of 1-8 KiB in {s.folders} folders", "small", False),
        "b": Workload("b", f"one {b.max_size // MIB} MiB file", "big", False),
        "c": Workload("c", f"no-op re-sync of (a): {s.files:,} files unchanged", "small", True),
        # Issue #7's scale targets: first sync <= 1.0x rsync, no-op <= 0.5x rsync ...
        "d": Workload(
            "d", f"{m.files:,} files of 1-8 KiB in {m.folders:,} folders", "many", False, 1.0
        ),
        "e": Workload("e", f"no-op re-sync of (d): {m.files:,} files unchanged", "many", True, 0.5),
        # ... and at a million files each side's peak RSS under 256 MiB (no time target).
        "f": Workload(
            "f",
            f"{t.files:,} files of 0-64 bytes in {t.folders:,} folders",
            "tiny",
            False,
            None,
            256,
            1,
            10_000,
        ),
        "g": Workload(
            "g",
            f"no-op re-sync of (f): {t.files:,} files unchanged",
            "tiny",
            True,
            None,
            256,
            1,
            10_000,
        ),
    }


def footprint(spec: SourceSpec) -> tuple[int, int]:
    """Upper bound of one copy of a tree on tmpfs: (bytes, inodes). Every file takes whole
    pages, so a million 1-byte files need about 4 GB."""
    pages = -(-spec.max_size // PAGE_BYTES)
    return spec.files * pages * PAGE_BYTES, spec.files + spec.folders + 1


def generate_tree(root: Path, spec: SourceSpec) -> None:
    """Deterministic pseudo-random (incompressible) content; same tree for every tool."""
    rng = random.Random(spec.seed)
    root.mkdir(parents=True)
    if spec.files == 1 and spec.folders == 1:
        # One big file, written in pieces to bound memory.
        with open(root / "big.bin", "wb") as handle:
            left = rng.randint(spec.min_size, spec.max_size)
            while left:
                piece = min(left, 8 * MIB)
                handle.write(rng.randbytes(piece))
                left -= piece
        return
    per_folder = -(-spec.files // spec.folders)
    made = 0
    for d in range(spec.folders):
        folder = root / f"dir{d:03d}"
        folder.mkdir()
        for f in range(per_folder):
            if made == spec.files:
                break
            size = rng.randint(spec.min_size, spec.max_size)
            with open(folder / f"file{f:04d}.bin", "wb") as handle:
                handle.write(rng.randbytes(size))
            made += 1


# --------------------------------------------------------------------------- tree manifests


class Entry(NamedTuple):
    """One manifest entry (a tuple: a million of them must stay small)."""

    kind: str  # "f", "d", "l"
    size: int
    exec_bit: bool
    mtime_ns: int


def walk(root: Path) -> dict[str, Entry]:
    """Relative path -> entry for everything under root, except the top-level .ssp folder."""
    out: dict[str, Entry] = {}
    stack = [("", str(root))]
    while stack:
        rel_dir, abs_dir = stack.pop()
        with os.scandir(abs_dir) as it:
            for de in it:
                rel = f"{rel_dir}{de.name}"
                if rel == META_DIR:
                    continue
                st = de.stat(follow_symlinks=False)
                if de.is_symlink():
                    out[rel] = Entry("l", 0, False, st.st_mtime_ns)
                elif de.is_dir(follow_symlinks=False):
                    out[rel] = Entry("d", 0, False, st.st_mtime_ns)
                    stack.append((rel + "/", de.path))
                else:
                    out[rel] = Entry("f", st.st_size, bool(st.st_mode & 0o111), st.st_mtime_ns)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(4 * MIB)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


@dataclass
class SourceTree:
    spec: SourceSpec
    path: Path
    manifest: dict[str, Entry]
    files: int
    total_bytes: int
    # sha256 of the files a check has hashed so far (checks that sample need only those).
    hashes: dict[str, str] = field(default_factory=dict)

    def sha256(self, rel: str) -> str:
        digest = self.hashes.get(rel)
        if digest is None:
            digest = self.hashes[rel] = sha256_file(self.path / rel)
        return digest


def load_source(path: Path, spec: SourceSpec) -> SourceTree:
    manifest = walk(path)
    sizes = [e.size for e in manifest.values() if e.kind == "f"]
    return SourceTree(spec, path, manifest, len(sizes), sum(sizes))


@dataclass
class VerifyResult:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def verify(src: SourceTree, dest: Path, rng: random.Random, sample_limit: int) -> VerifyResult:
    """Destination must equal the source (file list, kinds, sizes, sha256); .ssp excluded.

    All files are hashed when there are at most ``sample_limit`` files (0: always all);
    otherwise a random sample of that many.  mtime/exec-bit differences are warnings.
    """
    res = VerifyResult()
    got = walk(dest)
    missing = sorted(set(src.manifest) - set(got))
    extra = sorted(set(got) - set(src.manifest))
    if missing:
        res.errors.append(f"{len(missing)} missing, e.g. {missing[:3]}")
    if extra:
        res.errors.append(f"{len(extra)} unexpected, e.g. {extra[:3]}")
    bad_kind, bad_size, bad_mtime, bad_exec = [], [], [], []
    for rel, want in src.manifest.items():
        have = got.get(rel)
        if have is None:
            continue
        if have.kind != want.kind:
            bad_kind.append(rel)
            continue
        if want.kind != "f":
            continue
        if have.size != want.size:
            bad_size.append(rel)
        if have.mtime_ns != want.mtime_ns:
            bad_mtime.append((rel, want.mtime_ns, have.mtime_ns))
        if have.exec_bit != want.exec_bit:
            bad_exec.append(rel)
    if bad_kind:
        res.errors.append(f"{len(bad_kind)} of the wrong type, e.g. {bad_kind[:3]}")
    if bad_size:
        res.errors.append(f"{len(bad_size)} with the wrong size, e.g. {bad_size[:3]}")
    names = sorted(
        rel
        for rel, want in src.manifest.items()
        if want.kind == "f" and rel in got and got[rel].kind == "f"
    )
    if sample_limit and len(names) > sample_limit:
        names = rng.sample(names, sample_limit)
    bad_hash = [rel for rel in names if sha256_file(dest / rel) != src.sha256(rel)]
    if bad_hash:
        res.errors.append(f"{len(bad_hash)} with the wrong content (sha256), e.g. {bad_hash[:3]}")
    if bad_mtime:
        rel, want_ns, have_ns = bad_mtime[0]
        res.warnings.append(
            f"{len(bad_mtime)} files with a different mtime, e.g. {rel}: "
            f"source {want_ns} ns, copy {have_ns} ns (diff {(have_ns - want_ns) / 1e9:+.6f} s)"
        )
    if bad_exec:
        res.warnings.append(f"{len(bad_exec)} files with a different exec bit, e.g. {bad_exec[:3]}")
    return res


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], what: str, log_path: Path, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(
                f"{what} exited with status {proc.returncode} before listening:\n" + tail(log_path)
            )
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", port))
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise BenchError(
        f"{what} did not accept connections on 127.0.0.1:{port} within {timeout:.0f} s"
        f":\n{tail(log_path)}"
    )


def tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:]) or "    (empty log)"


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


class Daemon:
    """A long-running server process whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.cmd, self.port, self.log_path = name, cmd, port, log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        wait_for_port(self.port, self.proc, self.name, self.log_path)

    def cpu_seconds(self) -> float | None:
        """User + system CPU of the server and its reaped children (rsync forks per client)."""
        if self.proc is None:
            return None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return ticks / os.sysconf("SC_CLK_TCK")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} died (status {self.proc.returncode}):\n" + tail(self.log_path)
            )

    def peak_rss(self) -> PeakRss | None:
        return None if self.proc is None else PeakRss(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (rsync's daemon forks a process per connection)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError, ValueError):
                    children = Path(f"/proc/{p}/task/{tid}/children").read_text()
                    todo.extend(int(c) for c in children.split())
    return out


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a live process (VmHWM), 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class PeakRss:
    """The largest peak RSS of one process of a server's tree during one run.

    The server's own peak is reset first (``clear_refs`` 5), so a run is not charged for an
    earlier one; processes forked during the run (rsync's per-connection child) start fresh.
    A thread samples VmHWM every RSS_SAMPLE_INTERVAL_S: VmHWM only grows, so what a sample
    can miss is the growth in a child's last interval before it exits.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _sample(self) -> None:
        for p in process_tree(self.pid):
            self.peak_kib = max(self.peak_kib, vm_hwm_kib(p))

    def _run(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_INTERVAL_S):
            self._sample()

    def __enter__(self) -> PeakRss:  # noqa: PYI034
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --------------------------------------------------------------------------- tools


@dataclass
class RunOutput:
    seconds: float
    stdout: str
    stderr: str
    cpu: float  # the client process's user + system CPU seconds (children included)
    # The client's peak RSS: its largest process (rsync forks a receiver); None without
    # GNU time.
    rss_kib: int | None
    server_rss_kib: int | None  # the server's during this run (None: no server)


class Tool:
    name = ""

    def __init__(self, base: Path) -> None:
        self.base = base

    def start(self, src: SourceTree, key: str) -> None:
        """Start whatever serves ``src`` for workload ``key`` (untimed)."""

    def stop(self) -> None:
        """Stop it."""

    def command(self, src: SourceTree, dest: Path) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def check_alive(self) -> None:
        pass

    def run(self, src: SourceTree, dest: Path) -> RunOutput:
        cmd = self.command(src, dest)
        env = self.env()
        sampler = self.peak_rss()
        with tempfile.NamedTemporaryFile(prefix="ssp-bench-rss-") as rss_file:
            # The client's peak RSS comes from GNU time's wait4: the bench's own wait4 would
            # report this Python process's size instead (exec keeps the forking parent's
            # peak in ru_maxrss), which is larger than rsync's and grows with the manifests.
            timed = [TIME_BIN, "-f", "%M", "-o", rss_file.name, *cmd] if TIME_BIN else cmd
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            with sampler if sampler is not None else contextlib.nullcontext():
                t0 = time.perf_counter()
                proc = subprocess.run(
                    timed, stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False
                )
                seconds = time.perf_counter() - t0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            # Its last line (before it, time notes a non-zero exit status).
            lines = Path(rss_file.name).read_text().split()
            rss_kib = int(lines[-1]) if lines and lines[-1].isdigit() else None
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            self.check_alive()
            raise BenchError(
                f"{self.name} failed with exit status {proc.returncode}: {shlex.join(cmd)}\n"
                f"  stdout: {out.strip()[-2000:]}\n  stderr: {err.strip()[-2000:]}"
            )
        server_rss = None if sampler is None else sampler.peak_kib
        return RunOutput(seconds, out, err, cpu, rss_kib, server_rss)

    def server_cpu(self) -> float | None:
        """CPU seconds used so far by this tool's server (None: no server)."""
        return None

    def peak_rss(self) -> PeakRss | None:
        """A sampler of this tool's server's peak RSS for one run (None: no server)."""
        return None


class CpTool(Tool):
    name = "cp"

    def command(self, src: SourceTree, dest: Path) -> list[str]:
        # As specified: the whole source folder's content, including SSP's .ssp cache
        # (which is excluded from verification; its size is reported).
        return ["cp", "-a", f"{src.path}/.", f"{dest}/"]


class RsyncTool(Tool):
    name = "rsync"

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.daemon: Daemon | None = None
        self.module = ""

    def start(self, src: SourceTree, key: str) -> None:
        port = free_port()
        self.module = f"bench_{key}"
        conf = self.base / f"rsyncd-{key}.conf"
        ids = "uid = root\ngid = root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"use chroot = no\nreverse lookup = no\n{ids}"
            f"pid file = {self.base}/rsyncd-{key}.pid\n"
            f"log file = {self.base}/rsyncd-{key}.log\n"
            f"[{self.module}]\n"
            f"    path = {src.path}\n"
            f"    read only = yes\n"
            f"    list = yes\n"
            # SSP's metadata folder lives in the shared source tree; rsync must not copy it.
            f"    exclude = /{META_DIR}/\n"
        )
        self.port = port
        self.daemon = Daemon(
            "rsync daemon",
            [
                "rsync",
                "--daemon",
                "--no-detach",
                f"--config={conf}",
                f"--port={port}",
                "--address=127.0.0.1",
            ],
            port,
            self.base / f"rsyncd-{key}.out",
        )
        self.daemon.start()

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def check_alive(self) -> None:
        if self.daemon is not None:
            self.daemon.check_alive()

    def server_cpu(self) -> float | None:
        return None if self.daemon is None else self.daemon.cpu_seconds()

    def peak_rss(self) -> PeakRss | None:
        return None if self.daemon is None else self.daemon.peak_rss()

    def command(self, src: SourceTree, dest: Path) -> list[str]:
        return ["rsync", "-a", f"rsync://127.0.0.1:{self.port}/{self.module}/", f"{dest}/"]


class SspTool(Tool):
    name = "ssp"

    def __init__(
        self, base: Path, client: str, server: str, client_args: list[str], server_args: list[str]
    ) -> None:
        super().__init__(base)
        self.client, self.server = client, server
        self.client_args, self.server_args = client_args, server_args
        self.daemon: Daemon | None = None
        self.port = 0
        self._env = dict(os.environ, SSP_SECRET=SECRET)

    def env(self) -> dict[str, str] | None:
        return self._env

    def start(self, src: SourceTree, key: str) -> None:
        self.port = free_port()
        # The secret goes through SSP_SECRET (supported by the CLI): FOLDER HOST PORT.
        self.daemon = Daemon(
            "ssp-server",
            [self.server, *self.server_args, str(src.path), "127.0.0.1", str(self.port)],
            self.port,
            self.base / f"ssp-server-{key}.log",
            env=self._env,
        )
        self.daemon.start()

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def check_alive(self) -> None:
        if self.daemon is not None:
            self.daemon.check_alive()

    def server_cpu(self) -> float | None:
        return None if self.daemon is None else self.daemon.cpu_seconds()

    def peak_rss(self) -> PeakRss | None:
        return None if self.daemon is None else self.daemon.peak_rss()

    def command(self, src: SourceTree, dest: Path) -> list[str]:
        return [self.client, *self.client_args, str(dest), "127.0.0.1", str(self.port)]


# --------------------------------------------------------------------------- environment


def find_ssp(explicit: str | None, name: str, near: str | None = None) -> str | None:
    """--ssp-xxx path, else (for the server) the client's folder, else the repo's .venv/bin
    (next to this script), else PATH."""
    if explicit:
        path = shutil.which(explicit) or explicit
        if not os.access(path, os.X_OK):
            raise BenchError(f"{name}: {explicit} is not an executable")
        return os.path.abspath(path)
    repo_venv = Path(__file__).resolve().parent.parent / ".venv" / "bin" / name
    candidates = [Path(near).parent / name, repo_venv] if near else [repo_venv]
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return shutil.which(name)


def check_tmpfs(path: Path) -> tuple[bool, str]:
    """Is ``path`` on tmpfs?  Returns (ok, filesystem type)."""
    best, fstype = "", "unknown"
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(
                    mnt
                ) >= len(best):
                    best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype == "tmpfs", fstype


def room(path: Path) -> tuple[int, int]:
    """Free (bytes, inodes) on the filesystem of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_favail


def prepare_tmpfs(
    requested: str | None, need_bytes: int, need_inodes: int
) -> tuple[Path, Path | None, str]:
    """Pick the tmpfs base folder.  Returns (base, mountpoint we mounted or None, fs type).

    As root a private tmpfs is mounted when the base is not tmpfs, or when it lacks the space
    or the inodes the selected workloads need (/dev/shm allows about one inode per 8 KiB of
    RAM: too few for the million-file workload's source and two copies on a small machine).
    """
    base = Path(requested or "/dev/shm")
    if not base.is_dir():
        raise BenchError(f"{base} is not a folder")
    ok, fstype = check_tmpfs(base.resolve())
    free_bytes, free_inodes = room(base)
    fits = free_bytes >= need_bytes and free_inodes >= need_inodes
    if ok and fits:
        return base, None, fstype
    why = (
        f"{base} is {fstype}, not tmpfs"
        if not ok
        else (
            f"{base} has {free_bytes / MIB:,.0f} MiB and {free_inodes:,} inodes free, "
            f"need about {need_bytes / MIB:,.0f} MiB and {need_inodes:,}"
        )
    )
    if os.geteuid() == 0 and shutil.which("mount"):
        mnt = Path(tempfile.mkdtemp(prefix="ssp-bench-mnt-"))
        options = f"size=80%,nr_inodes={max(need_inodes + need_inodes // 10, 1_000_000)}"
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode == 0:
            log(f"note: {why}: mounted a tmpfs at {mnt} ({options})")
            return mnt, mnt, "tmpfs"
        mnt.rmdir()
        log(f"warning: could not mount a tmpfs ({res.stderr.strip()})")
    if not fits:
        raise BenchError(f"{why} (run as root to get a private tmpfs, or pass --tmpdir)")
    log(f"WARNING: {why}: timings include disk I/O")
    return base, None, fstype


def available_memory() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * KIB
    return None


def first_line(cmd: list[str]) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (res.stdout or res.stderr).strip().splitlines()
    return text[0] if text else f"exit status {res.returncode}"


def machine_info(ssp_client: str | None, fstype: str, base: Path) -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info: dict[str, Any] = {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_at_start": list(os.getloadavg()),
        "tmp_base": str(base),
        "tmp_fs": fstype,
        "rsync": first_line(["rsync", "--version"]),
        "cp": first_line(["cp", "--version"]),
    }
    if ssp_client:
        info["ssp_client"] = ssp_client
        info["ssp_version"] = first_line([ssp_client, "--version"])
        info["ssp_client_startup_s"] = startup_time([ssp_client, "--version"])
    info["rsync_startup_s"] = startup_time(["rsync", "--version"])
    return info


def startup_time(cmd: list[str], runs: int = 5) -> float | None:
    """Median wall time of a command that does no work (process start-up cost)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        try:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        except OSError:
            return None
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------- measurement


@dataclass
class Result:
    tool: str
    workload: str
    times: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reported: list[float] = field(default_factory=list)  # ssp-client's own "in X s"
    cpu_client: list[float] = field(default_factory=list)
    cpu_server: list[float] = field(default_factory=list)
    rss_client_kib: list[int] = field(default_factory=list)
    rss_server_kib: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def empty_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def dir_size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def dest_path(work: Path, key: str, tool: str) -> Path:
    return work / f"dest-{key}-{tool}"


def run_workload(
    wl: Workload,
    src: SourceTree,
    tools: list[Tool],
    rounds: int,
    work: Path,
    sample_limit: int,
    verbose: bool,
    settle: float = 0.0,
    filled: dict[str, Path] | None = None,
    keep: bool = False,
) -> dict[str, Result]:
    """Time every tool on one workload. For a no-op workload, ``filled`` may hand over each
    tool's destination as the tool's own last run left it (the first-sync workload of the same
    source just ran): that is what its warm-up would make, so the warm-up is skipped. With
    ``keep`` a first-sync workload leaves its last destinations in place for that."""
    results = {t.name: Result(t.name, wl.key) for t in tools}
    dests = {t.name: dest_path(work, wl.key, t.name) for t in tools}
    keep_ok = False  # set once every round ran: only then are the kept trees complete
    for name, path in (filled or {}).items():
        path.rename(dests[name])
    rng = random.Random(1234)

    def check(tool: Tool, dest: Path, what: str) -> None:
        res = verify(src, dest, rng, sample_limit)
        if res.errors:
            raise BenchError(
                f"WRONG RESULT: {tool.name} on workload ({wl.key}) {what}: destination differs "
                f"from the source:\n  " + "\n  ".join(res.errors)
            )
        for w in res.warnings:
            if w not in results[tool.name].warnings:
                results[tool.name].warnings.append(w)
                log(f"  warning: {tool.name} ({wl.key}): {w}")

    try:
        for tool in tools:
            tool.start(src, wl.key)
        # Untimed warm-up, one per tool: builds ssp-server's hash cache (like a warm page
        # cache for rsync) and, for the no-op workload, pre-populates the destination.
        for tool in tools:
            dest = dests[tool.name]
            if wl.noop and filled and tool.name in filled:
                results[tool.name].notes.append("no warm-up: the first-sync workload filled it")
                log(f"  warm-up  {tool.name:<5} skipped (filled by the previous workload)")
                continue
            empty_dir(dest)
            out = tool.run(src, dest)
            check(tool, dest, "warm-up")
            note = f"warm-up {out.seconds:.3f} s"
            if tool.name == "ssp" and out.stdout.strip():
                note += f" ({out.stdout.strip().splitlines()[-1]})"
            results[tool.name].notes.append(note)
            log(f"  warm-up  {tool.name:<5} {out.seconds:8.3f} s (untimed)")
            if wl.noop:
                # The pre-populated tree must stay; the re-runs below change nothing.
                continue
            shutil.rmtree(dest)
        for r in range(rounds):
            k = r % len(tools)
            order = tools[k:] + tools[:k]
            line = []
            for tool in order:
                dest = dests[tool.name]
                if not wl.noop:
                    empty_dir(dest)  # untimed
                if settle:
                    time.sleep(settle)
                cpu0 = tool.server_cpu()
                out = tool.run(src, dest)
                results[tool.name].times.append(out.seconds)
                results[tool.name].cpu_client.append(out.cpu)
                if out.rss_kib is not None:
                    results[tool.name].rss_client_kib.append(out.rss_kib)
                if out.server_rss_kib is not None:
                    results[tool.name].rss_server_kib.append(out.server_rss_kib)
                own = SSP_REPORTED.search(out.stdout) if tool.name == "ssp" else None
                if own:
                    results[tool.name].reported.append(float(own.group(1)))
                check(tool, dest, f"round {r + 1}")
                cpu1 = tool.server_cpu()  # read after the check: rsync's child is reaped by now
                if cpu0 is not None and cpu1 is not None:
                    results[tool.name].cpu_server.append(cpu1 - cpu0)
                if not wl.noop and not (keep and r == rounds - 1):
                    # Free it now (untimed): one destination at a time keeps the memory
                    # footprint flat, so no tool pays for fresh pages the others left behind.
                    shutil.rmtree(dest)
                line.append(f"{tool.name} {out.seconds:.3f}s")
                if verbose and out.stdout.strip():
                    log(f"    {tool.name}: {out.stdout.strip().splitlines()[-1]}")
            log(f"  round {r + 1}/{rounds}: " + ", ".join(line))
        keep_ok = True
    finally:
        for tool in tools:
            tool.stop()
        for dest in dests.values():
            if dest.exists() and not (keep and keep_ok):
                shutil.rmtree(dest, ignore_errors=True)
    return results


# --------------------------------------------------------------------------- report


def fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def build_report(
    info: dict[str, Any],
    args: argparse.Namespace,
    wls: dict[str, Workload],
    sources: dict[str, SourceTree],
    all_results: dict[str, dict[str, Result]],
    meta_sizes: dict[str, int],
    rounds_of: dict[str, int],
) -> dict[str, Any]:
    rows = []
    verdicts = []
    for key, results in all_results.items():
        wl = wls[key]
        src = sources[wl.source]
        med = {name: r.median for name, r in results.items()}
        for name, r in results.items():
            m = r.median
            rows.append(
                {
                    "tool": name,
                    "workload": key,
                    "workload_title": wl.title,
                    "median_s": m,
                    "min_s": min(r.times),
                    "max_s": max(r.times),
                    "times_s": r.times,
                    "files": src.files,
                    "bytes": src.total_bytes,
                    "mb_per_s": None if wl.noop else src.total_bytes / m / 1e6,
                    "files_per_s": src.files / m,
                    "vs_rsync": m / med["rsync"] if "rsync" in med else None,
                    "vs_cp": m / med["cp"] if "cp" in med else None,
                    "warnings": r.warnings,
                    "cpu_client_median_s": statistics.median(r.cpu_client),
                    "cpu_server_median_s": statistics.median(r.cpu_server)
                    if r.cpu_server
                    else None,
                    "client_reported_median_s": statistics.median(r.reported)
                    if r.reported
                    else None,
                    "rss_client_peak_mib": max(r.rss_client_kib) / KIB
                    if r.rss_client_kib
                    else None,
                    "rss_server_peak_mib": max(r.rss_server_kib) / KIB
                    if r.rss_server_kib
                    else None,
                    "notes": r.notes,
                }
            )
        verdict: dict[str, Any] = {"workload": key}
        if "ssp" in med and "rsync" in med and wl.target_ratio is not None:
            ratio = med["ssp"] / med["rsync"]
            verdict.update(
                ssp_over_rsync=ratio,
                ssp_over_cp=med["ssp"] / med["cp"] if "cp" in med else None,
                target=wl.target_ratio,
            )
            verdict["pass"] = ratio <= wl.target_ratio
        ssp = results.get("ssp")
        if ssp and ssp.rss_client_kib and ssp.rss_server_kib and wl.rss_target_mib is not None:
            client, server = max(ssp.rss_client_kib) / KIB, max(ssp.rss_server_kib) / KIB
            verdict.update(
                rss_client_mib=client,
                rss_server_mib=server,
                rss_target_mib=wl.rss_target_mib,
                rss_pass=max(client, server) < wl.rss_target_mib,
            )
        if len(verdict) > 1:
            verdicts.append(verdict)
    return {
        "machine": info,
        "settings": {
            "rounds": rounds_of,
            "quick": args.quick,
            "tools": args.tools,
            "workloads": args.workloads,
            "warm_up": "one untimed sync per tool and workload before the timed rounds "
            "(a no-op workload right after the first sync of its tree starts from the trees "
            "that run's last round left)",
            "order": "interleaved rounds, tool order rotated each round",
            "timing": "time.perf_counter around subprocess.run of the whole client command",
            "ssp_meta_bytes_in_source": meta_sizes,
        },
        "workloads": {
            k: {
                "title": wls[k].title,
                "files": sources[wls[k].source].files,
                "bytes": sources[wls[k].source].total_bytes,
                "rounds": rounds_of[k],
            }
            for k in all_results
        },
        "results": rows,
        "verdicts": verdicts,
    }


def print_report(rep: dict[str, Any]) -> None:
    info = rep["machine"]
    st = rep["settings"]
    print()
    print("SSP benchmark")
    print(
        f"  machine : nproc {info['nproc']} ({info['cpu']}), RAM {info['memory']}, "
        f"kernel {info['kernel']}, load avg at start "
        + " ".join(f"{x:.2f}" for x in info["loadavg_at_start"])
    )
    print(f"  storage : {info['tmp_base']} ({info['tmp_fs']})")
    print(f"  rsync   : {info['rsync']}")
    print(f"  cp      : {info['cp']}")
    if "ssp_version" in info:
        print(f"  ssp     : {info['ssp_version']} ({info['ssp_client']})")
    print(
        "  method  : timed rounds per tool "
        + ", ".join(f"({k}) {n}" for k, n in st["rounds"].items())
        + f"; {st['order']}; {st['warm_up']} "
        "(not timed); each timed run includes process start; every result verified "
        "against the source (.ssp excluded)"
    )
    if st["ssp_meta_bytes_in_source"]:
        sizes = ", ".join(
            f"{k}: {v / 1024:.0f} KiB" for k, v in st["ssp_meta_bytes_in_source"].items()
        )
        print(
            f"  note    : cp -a SRC/. copies ssp-server's .ssp cache too ({sizes}); "
            "rsync excludes it"
        )
    print()
    header = (
        f"  {'tool':<6} {'median s':>9} {'min s':>8} {'MB/s':>8} {'files/s':>9} "
        f"{'vs rsync':>9} {'vs cp':>7} {'cpu client s':>13} {'cpu server s':>13} "
        f"{'rss client MiB':>15} {'rss server MiB':>15}"
    )
    print(header)
    print("-" * len(header))
    last = None
    for row in rep["results"]:
        if row["workload"] != last:
            print(f"({row['workload']}) {row['workload_title']}")
            last = row["workload"]
        mbs = "-" if row["mb_per_s"] is None else f"{row['mb_per_s']:.1f}"
        srv = row["cpu_server_median_s"]
        srv_rss, cli_rss = row["rss_server_peak_mib"], row["rss_client_peak_mib"]
        print(
            f"  {row['tool']:<6} {row['median_s']:>9.3f} {row['min_s']:>8.3f} {mbs:>8} "
            f"{row['files_per_s']:>9.0f} {fmt_ratio(row['vs_rsync']):>9} "
            f"{fmt_ratio(row['vs_cp']):>7} {row['cpu_client_median_s']:>13.2f} "
            f"{'-' if srv is None else f'{srv:.2f}':>13} "
            f"{'-' if cli_rss is None else f'{cli_rss:.1f}':>15} "
            f"{'-' if srv_rss is None else f'{srv_rss:.1f}':>15}"
        )
    print()
    for v in rep["verdicts"]:
        parts = []
        if "ssp_over_rsync" in v:
            extra = "" if v["ssp_over_cp"] is None else f", ssp/cp = {v['ssp_over_cp']:.2f}x"
            parts.append(
                f"ssp/rsync = {v['ssp_over_rsync']:.2f}x (target <= {v['target']}x): "
                f"{'PASS' if v['pass'] else 'FAIL'}{extra}"
            )
        if "rss_pass" in v:
            parts.append(
                f"ssp peak RSS client {v['rss_client_mib']:.1f} MiB, server "
                f"{v['rss_server_mib']:.1f} MiB (target < {v['rss_target_mib']} MiB each): "
                f"{'PASS' if v['rss_pass'] else 'FAIL'}"
            )
        print(f"({v['workload']}) " + "; ".join(parts))
    warned = [r for r in rep["results"] if r["warnings"]]
    for r in warned:
        for w in r["warnings"]:
            print(f"warning: {r['tool']} ({r['workload']}): {w}")
    own = [
        (r["workload"], r["client_reported_median_s"])
        for r in rep["results"]
        if r["client_reported_median_s"] is not None
    ]
    if own:
        print(
            "ssp-client's own reported sync time (median, excludes interpreter start-up): "
            + ", ".join(f"({k}) {v:.3f} s" for k, v in own)
        )
    if info.get("ssp_client_startup_s") is not None:
        print(
            f"process start-up alone (--version, median of 5): ssp-client "
            f"{info['ssp_client_startup_s']:.3f} s, rsync {info['rsync_startup_s']:.3f} s"
        )
    print(
        "load avg at start / end: "
        + " ".join(f"{x:.2f}" for x in info["loadavg_at_start"])
        + " / "
        + " ".join(f"{x:.2f}" for x in info.get("loadavg_at_end", []))
    )
    print(
        "(MB/s = 10^6 bytes of file data per second of median time, none for the no-op; "
        "cpu = median user+system seconds of the client process and of the server per run; "
        "rss = peak resident set of the largest client process (GNU time) and server process "
        f"(VmHWM sampled every {RSS_SAMPLE_INTERVAL_S * 1000:.0f} ms) over the timed runs)"
    )


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark ssp-client against rsync (daemon on loopback) and cp -a on tmpfs.",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed rounds per tool and workload (default 5, 1 for f and g; 2 with --quick)",
    )
    p.add_argument(
        "--workloads",
        default=DEFAULT_WORKLOADS,
        help="comma list of a (10k small files), b (512 MiB file), c (no-op re-sync of a), "
        "d (100k small files), e (no-op of d), f (1M files of 0-64 bytes), g (no-op of f); "
        "aliases 100k = d,e, 1m = f,g, scale = d,e,f,g (default a,b,c)",
    )
    p.add_argument("--tools", default="ssp,rsync,cp", help="comma list of ssp,rsync,cp")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1,000 small files in 10 folders, a 32 MiB file, 2 rounds",
    )
    p.add_argument(
        "--ssp-client",
        help="ssp-client executable (default: the repo's .venv/bin/ssp-client, then PATH)",
    )
    p.add_argument(
        "--ssp-server",
        help="ssp-server executable (default: next to ssp-client, the repo's .venv/bin, then PATH)",
    )
    p.add_argument(
        "--ssp-client-args",
        default="",
        help="extra ssp-client options, e.g. '--chunk-size 1M' (one string)",
    )
    p.add_argument("--ssp-server-args", default="", help="extra ssp-server options (one string)")
    p.add_argument("--tmpdir", help="base folder for the data (default /dev/shm; must be tmpfs)")
    p.add_argument(
        "--verify-sample",
        type=int,
        default=None,
        metavar="N",
        help="hash only N random files per check when there are more (0: every file; default "
        "every file, 10,000 for f and g)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the results as JSON on stdout instead of the table",
    )
    p.add_argument("--save", metavar="FILE", help="also write the JSON results to FILE")
    p.add_argument(
        "--check-target",
        action="store_true",
        help="exit with status 3 if a workload misses its target (time ratio or peak RSS)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary folder (data and server logs) for inspection",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="pause before each timed run (after preparing the destination; default 0)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show each client's output")
    args = p.parse_args(argv)
    # None until here means "not given": a workload may then choose its own (see Workload).
    args.rounds_given = args.rounds is not None
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.workloads = [
        key
        for w in args.workloads.split(",")
        if w.strip()
        for key in WORKLOAD_ALIASES.get(w.strip().lower(), (w.strip(),))
    ]
    for t in args.tools:
        if t not in ALL_TOOLS:
            p.error(f"unknown tool {t!r} (choose from {','.join(ALL_TOOLS)})")
    for w in args.workloads:
        if w not in ALL_WORKLOADS:
            p.error(f"unknown workload {w!r} (choose from {','.join(ALL_WORKLOADS)})")
    if not args.tools or not args.workloads:
        p.error("need at least one tool and one workload")
    args.tools = [t for t in ALL_TOOLS if t in args.tools]  # canonical order: ssp, rsync, cp
    args.workloads = [w for w in ALL_WORKLOADS if w in args.workloads]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    if "rsync" in args.tools and not shutil.which("rsync"):
        log(
            "error: rsync is not installed. Install it with:\n"
            "    apt-get install -y rsync      (Debian/Ubuntu; run apt-get update first)\n"
            "or run without it: --tools ssp,cp"
        )
        return 2
    if "cp" in args.tools and not shutil.which("cp"):
        log("error: cp not found")
        return 2
    ssp_client = ssp_server = None
    if "ssp" in args.tools:
        ssp_client = find_ssp(args.ssp_client, "ssp-client")
        ssp_server = find_ssp(args.ssp_server, "ssp-server", near=ssp_client)
        if not ssp_client or not ssp_server:
            log(
                "error: ssp-client/ssp-server not found (build with `maturin develop` or "
                "`pip install .` in the repo's .venv, or pass --ssp-client/--ssp-server); "
                "to benchmark only the others: --tools rsync,cp"
            )
            return 2

    # SIGTERM (and SIGHUP) clean up like Ctrl-C.
    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGINT too, explicitly: a shell's background job inherits it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, on_signal)

    mounted: Path | None = None
    work: Path | None = None
    status = 0
    try:
        specs = source_specs(args.quick)
        wls = workloads(specs)
        # A source tree exists from its first workload to its last, then it is removed; at
        # most one exists at a time if the workloads are listed in order. At its fullest (a
        # no-op workload) a tree lives once as the source and once per tool.
        last_use = {wls[w].source: i for i, w in enumerate(args.workloads)}
        copies = 1 + len(args.tools)
        need_bytes = max(footprint(specs[n])[0] for n in last_use) * copies * 11 // 10
        need_inodes = max(footprint(specs[n])[1] for n in last_use) * copies + 10_000
        base, mounted, fstype = prepare_tmpfs(args.tmpdir, need_bytes, need_inodes)
        work = Path(tempfile.mkdtemp(prefix="ssp-bench-", dir=base))
        info = machine_info(ssp_client, fstype, base)
        rounds_of = {
            w: args.rounds
            if args.rounds_given
            else min(args.rounds, wls[w].default_rounds or args.rounds)
            for w in args.workloads
        }
        log(
            f"ssp bench: work folder {work} ({fstype}); tools {','.join(args.tools)}; "
            f"workloads {','.join(args.workloads)}; rounds "
            + ",".join(f"{w}:{n}" for w, n in rounds_of.items())
            + (" (quick)" if args.quick else "")
        )
        memory = available_memory()
        if memory is not None and fstype == "tmpfs" and need_bytes > memory:
            log(
                f"warning: the trees may need {need_bytes / MIB:,.0f} MiB of tmpfs, "
                f"more than the {memory / MIB:,.0f} MiB of memory available"
            )

        tools: list[Tool] = []
        for name in args.tools:
            if name == "ssp":
                assert ssp_client and ssp_server
                tools.append(
                    SspTool(
                        work,
                        ssp_client,
                        ssp_server,
                        shlex.split(args.ssp_client_args),
                        shlex.split(args.ssp_server_args),
                    )
                )
            elif name == "rsync":
                tools.append(RsyncTool(work))
            else:
                tools.append(CpTool(work))

        sources: dict[str, SourceTree] = {}
        meta_sizes: dict[str, int] = {}
        all_results: dict[str, dict[str, Result]] = {}
        filled: dict[str, Path] | None = None
        for i, w in enumerate(args.workloads):
            wl = wls[w]
            if wl.source not in sources:
                t0 = time.perf_counter()
                path = work / f"src-{wl.source}"
                generate_tree(path, specs[wl.source])
                sources[wl.source] = load_source(path, specs[wl.source])
                src = sources[wl.source]
                log(
                    f"source {wl.source}: {src.files:,} files, {src.total_bytes / MIB:.1f} MiB "
                    f"(generated in {time.perf_counter() - t0:.1f} s)"
                )
            src = sources[wl.source]
            # A first sync followed by the no-op of the same tree hands over its destinations.
            nxt = wls[args.workloads[i + 1]] if i + 1 < len(args.workloads) else None
            keep = not wl.noop and nxt is not None and nxt.noop and nxt.source == wl.source
            log(f"workload ({w}): {wl.title}")
            all_results[w] = run_workload(
                wl,
                src,
                tools,
                rounds_of[w],
                work,
                wl.default_sample if args.verify_sample is None else args.verify_sample,
                args.verbose,
                args.settle,
                filled,
                keep,
            )
            filled = {t.name: dest_path(work, w, t.name) for t in tools} if keep else None
            if last_use[wl.source] == i:
                meta = src.path / META_DIR
                if "ssp" in args.tools and meta.is_dir():
                    meta_sizes[wl.source] = dir_size(meta)
                if not args.keep:
                    shutil.rmtree(src.path, ignore_errors=True)
                    src.manifest, src.hashes = {}, {}  # a million entries: free them now

        info["loadavg_at_end"] = list(os.getloadavg())
        rep = build_report(info, args, wls, sources, all_results, meta_sizes, rounds_of)
        if args.json:
            json.dump(rep, sys.stdout, indent=2)
            print()
        else:
            print_report(rep)
        if args.save:
            Path(args.save).write_text(json.dumps(rep, indent=2) + "\n")
            log(f"results written to {args.save}")
        missed = [
            v for v in rep["verdicts"] if v.get("pass") is False or v.get("rss_pass") is False
        ]
        if args.check_target and missed:
            status = 3
    except BenchError as exc:
        log(f"\nBENCHMARK FAILED: {exc}")
        status = 1
    except KeyboardInterrupt:
        log("\ninterrupted: cleaning up")
        status = 130
    finally:
        if work is not None:
            if args.keep:
                log(f"kept {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
        if mounted is not None and not args.keep:
            subprocess.run(["umount", str(mounted)], check=False)
            with contextlib.suppress(OSError):
                mounted.rmdir()
    return status


if __name__ == "__main__":
    sys.exit(main())
