#!/usr/bin/env python3
"""SSP benchmark: ssp-client vs rsync (daemon on loopback) vs cp -a, on tmpfs.

One run generates deterministic, incompressible source trees under a fresh temporary
folder on tmpfs (/dev/shm), then for each workload times every tool in interleaved
rounds (round 1: ssp, rsync, cp; round 2: rsync, cp, ssp; ...), verifies every timed
result against the source, and prints median times and ratios.

Workloads
  a  10,000 files of 1-8 KiB in 100 folders, into an empty destination
  b  one 512 MiB file, into an empty destination
  c  re-sync of the unchanged tree of (a) into a destination that already has it (no-op)

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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALL_TOOLS = ("ssp", "rsync", "cp")
ALL_WORKLOADS = ("a", "b", "c")
TARGET_RATIO = 1.5  # ssp time <= 1.5 x rsync time
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
        }
    return {
        "small": SourceSpec("small", 10_000, 100, 1 * KIB, 8 * KIB, 1),
        "big": SourceSpec("big", 1, 1, 512 * MIB, 512 * MIB, 2),
    }


def workloads(specs: dict[str, SourceSpec]) -> dict[str, Workload]:
    s, b = specs["small"], specs["big"]
    return {
        "a": Workload("a", f"{s.files:,} files of 1-8 KiB in {s.folders} folders", "small", False),
        "b": Workload("b", f"one {b.max_size // MIB} MiB file", "big", False),
        "c": Workload("c", f"no-op re-sync of (a): {s.files:,} files unchanged", "small", True),
    }


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
            (folder / f"file{f:04d}.bin").write_bytes(rng.randbytes(size))
            made += 1


# --------------------------------------------------------------------------- tree manifests


@dataclass
class Entry:
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
    hashes: dict[str, str]
    files: int
    total_bytes: int


def load_source(path: Path, spec: SourceSpec) -> SourceTree:
    manifest = walk(path)
    files = {k: v for k, v in manifest.items() if v.kind == "f"}
    hashes = {rel: sha256_file(path / rel) for rel in files}
    return SourceTree(spec, path, manifest, hashes, len(files), sum(e.size for e in files.values()))


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
    names = sorted(rel for rel in src.hashes if rel in got and got[rel].kind == "f")
    if sample_limit and len(names) > sample_limit:
        names = rng.sample(names, sample_limit)
    bad_hash = [rel for rel in names if sha256_file(dest / rel) != src.hashes[rel]]
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

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None


# --------------------------------------------------------------------------- tools


@dataclass
class RunOutput:
    seconds: float
    stdout: str
    stderr: str
    cpu: float  # the client process's user + system CPU seconds (children included)


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
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, env=env, check=False
        )
        seconds = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if proc.returncode != 0:
            self.check_alive()
            raise BenchError(
                f"{self.name} failed with exit status {proc.returncode}: {shlex.join(cmd)}\n"
                f"  stdout: {out.strip()[-2000:]}\n  stderr: {err.strip()[-2000:]}"
            )
        return RunOutput(seconds, out, err, cpu)

    def server_cpu(self) -> float | None:
        """CPU seconds used so far by this tool's server (None: no server)."""
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


def prepare_tmpfs(requested: str | None) -> tuple[Path, Path | None, str]:
    """Pick the tmpfs base folder.  Returns (base, mountpoint we mounted or None, fs type)."""
    base = Path(requested or "/dev/shm")
    if not base.is_dir():
        raise BenchError(f"{base} is not a folder")
    ok, fstype = check_tmpfs(base.resolve())
    if ok:
        return base, None, fstype
    if os.geteuid() == 0 and shutil.which("mount"):
        mnt = Path(tempfile.mkdtemp(prefix="ssp-bench-mnt-"))
        res = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=80%", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode == 0:
            log(f"note: {base} is {fstype}, not tmpfs: mounted a tmpfs at {mnt}")
            return mnt, mnt, "tmpfs"
        mnt.rmdir()
        log(f"warning: could not mount a tmpfs ({res.stderr.strip()})")
    log(f"WARNING: {base} is {fstype}, not tmpfs: timings include disk I/O")
    return base, None, fstype


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


def run_workload(
    wl: Workload,
    src: SourceTree,
    tools: list[Tool],
    rounds: int,
    work: Path,
    sample_limit: int,
    verbose: bool,
    settle: float = 0.0,
) -> dict[str, Result]:
    results = {t.name: Result(t.name, wl.key) for t in tools}
    dests = {t.name: work / f"dest-{wl.key}-{t.name}" for t in tools}
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
                own = SSP_REPORTED.search(out.stdout) if tool.name == "ssp" else None
                if own:
                    results[tool.name].reported.append(float(own.group(1)))
                check(tool, dest, f"round {r + 1}")
                cpu1 = tool.server_cpu()  # read after the check: rsync's child is reaped by now
                if cpu0 is not None and cpu1 is not None:
                    results[tool.name].cpu_server.append(cpu1 - cpu0)
                if not wl.noop:
                    # Free it now (untimed): one destination at a time keeps the memory
                    # footprint flat, so no tool pays for fresh pages the others left behind.
                    shutil.rmtree(dest)
                line.append(f"{tool.name} {out.seconds:.3f}s")
                if verbose and out.stdout.strip():
                    log(f"    {tool.name}: {out.stdout.strip().splitlines()[-1]}")
            log(f"  round {r + 1}/{rounds}: " + ", ".join(line))
    finally:
        for tool in tools:
            tool.stop()
        for dest in dests.values():
            if dest.exists():
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
                    "notes": r.notes,
                }
            )
        if "ssp" in med and "rsync" in med:
            ratio = med["ssp"] / med["rsync"]
            verdicts.append(
                {
                    "workload": key,
                    "ssp_over_rsync": ratio,
                    "ssp_over_cp": med["ssp"] / med["cp"] if "cp" in med else None,
                    "target": TARGET_RATIO,
                    "pass": ratio <= TARGET_RATIO,
                }
            )
    return {
        "machine": info,
        "settings": {
            "rounds": args.rounds,
            "quick": args.quick,
            "tools": args.tools,
            "workloads": args.workloads,
            "warm_up": "one untimed sync per tool and workload before the timed rounds",
            "order": "interleaved rounds, tool order rotated each round",
            "timing": "time.perf_counter around subprocess.run of the whole client command",
            "ssp_meta_bytes_in_source": meta_sizes,
        },
        "workloads": {
            k: {
                "title": wls[k].title,
                "files": sources[wls[k].source].files,
                "bytes": sources[wls[k].source].total_bytes,
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
        f"  method  : {st['rounds']} timed rounds per tool, {st['order']}; {st['warm_up']} "
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
        f"{'vs rsync':>9} {'vs cp':>7} {'cpu client s':>13} {'cpu server s':>13}"
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
        print(
            f"  {row['tool']:<6} {row['median_s']:>9.3f} {row['min_s']:>8.3f} {mbs:>8} "
            f"{row['files_per_s']:>9.0f} {fmt_ratio(row['vs_rsync']):>9} "
            f"{fmt_ratio(row['vs_cp']):>7} {row['cpu_client_median_s']:>13.2f} "
            f"{'-' if srv is None else f'{srv:.2f}':>13}"
        )
    print()
    for v in rep["verdicts"]:
        extra = "" if v["ssp_over_cp"] is None else f", ssp/cp = {v['ssp_over_cp']:.2f}x"
        print(
            f"({v['workload']}) ssp/rsync = {v['ssp_over_rsync']:.2f}x "
            f"(target <= {v['target']}x): {'PASS' if v['pass'] else 'FAIL'}{extra}"
        )
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
        "cpu = median user+system seconds of the client process and of the server per run)"
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
        help="timed rounds per tool and workload (default 5; 2 with --quick)",
    )
    p.add_argument(
        "--workloads",
        default="a,b,c",
        help="comma list of a (10k small files), b (512 MiB file), c (no-op re-sync)",
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
        default=0,
        metavar="N",
        help="hash only N random files per check when there are more (default 0: hash every file)",
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
        help=f"exit with status 3 if ssp/rsync > {TARGET_RATIO} on any workload",
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
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
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
        base, mounted, fstype = prepare_tmpfs(args.tmpdir)
        work = Path(tempfile.mkdtemp(prefix="ssp-bench-", dir=base))
        info = machine_info(ssp_client, fstype, base)
        log(
            f"ssp bench: work folder {work} ({fstype}); tools {','.join(args.tools)}; "
            f"workloads {','.join(args.workloads)}; {args.rounds} rounds"
            + (" (quick)" if args.quick else "")
        )

        specs = source_specs(args.quick)
        wls = workloads(specs)
        needed = []
        for w in args.workloads:
            if wls[w].source not in needed:
                needed.append(wls[w].source)
        need_bytes = sum(specs[n].files * specs[n].max_size for n in needed) * (
            1 + len(args.tools) + 1
        )
        free = shutil.disk_usage(work).free
        if free < need_bytes:
            raise BenchError(
                f"{work}: {free / MIB:.0f} MiB free, need about {need_bytes / MIB:.0f} MiB"
            )

        sources: dict[str, SourceTree] = {}
        for n in needed:
            t0 = time.perf_counter()
            path = work / f"src-{n}"
            generate_tree(path, specs[n])
            sources[n] = load_source(path, specs[n])
            s = sources[n]
            log(
                f"source {n}: {s.files:,} files, {s.total_bytes / MIB:.1f} MiB "
                f"(generated in {time.perf_counter() - t0:.1f} s)"
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

        all_results: dict[str, dict[str, Result]] = {}
        for w in args.workloads:
            wl = wls[w]
            log(f"workload ({w}): {wl.title}")
            all_results[w] = run_workload(
                wl,
                sources[wl.source],
                tools,
                args.rounds,
                work,
                args.verify_sample,
                args.verbose,
                args.settle,
            )
        meta_sizes = {}
        if "ssp" in args.tools:
            for n, s in sources.items():
                meta = s.path / META_DIR
                if meta.is_dir():
                    meta_sizes[n] = dir_size(meta)

        info["loadavg_at_end"] = list(os.getloadavg())
        rep = build_report(info, args, wls, sources, all_results, meta_sizes)
        if args.json:
            json.dump(rep, sys.stdout, indent=2)
            print()
        else:
            print_report(rep)
        if args.save:
            Path(args.save).write_text(json.dumps(rep, indent=2) + "\n")
            log(f"results written to {args.save}")
        if args.check_target and not all(v["pass"] for v in rep["verdicts"]):
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
