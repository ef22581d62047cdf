"""A full disk on the client: a sync that cannot fit is refused before anything is requested,
and one that runs out of room anyway (here: of inodes) stops at the first write that finds none;
either way with one clear line, no file at a final path is torn, and once space is freed the
next sync completes.

The client runs in a mount namespace of its own (``unshare``) whose sync folder is a small
tmpfs, so the test fills a real filesystem without touching the machine's: as root, a plain
mount namespace; otherwise an unprivileged user namespace. If neither can be made, the test
fails (it never skips).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import (
    BIN_DIR,
    HANG_S,
    HOST,
    SECRET,
    assert_synced,
    cli_env,
    one_error_line,
    payload,
    snapshot,
    write_file,
)

MIB = 1 << 20

# Runs inside the namespace: $1 client, $2 folder, $3 host, $4 port, $5 where to copy results,
# $6 the first mount's tmpfs options (too small). The folder then grows to 64 MiB and plenty of
# inodes for the second sync. After each sync its content is copied out with `cp -a`, since the
# tmpfs dies with the namespace.
SCRIPT = r"""
set -u
client=$1 folder=$2 host=$3 port=$4 out=$5 small=$6
mount -t tmpfs -o "$small" ssp-test "$folder" || exit 97
"$client" "$folder" "$host" "$port" >"$out/first.out" 2>"$out/first.err"
echo $? >"$out/first.rc"
cp -a "$folder/." "$out/after-first/"
mount -o remount,size=64m,nr_inodes=100000 "$folder" || exit 98
"$client" "$folder" "$host" "$port" >"$out/second.out" 2>"$out/second.err"
echo $? >"$out/second.rc"
cp -a "$folder/." "$out/after-second/"
"""


def in_own_mount_namespace() -> list[str]:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed to give the client a small filesystem"
    if os.geteuid() == 0:
        return [unshare, "--mount", "--propagation", "private"]
    return [unshare, "--user", "--map-root-user", "--mount"]


# (case, tmpfs options of the first sync, what its one line must say)
CASES = [
    pytest.param("size=3m", ["not enough space", "needs 6.0 MiB", "free some space"], id="space"),
    pytest.param("size=64m,nr_inodes=24", ["the disk is full", "free some space"], id="inodes"),
]


@pytest.mark.parametrize(("small", "says"), CASES)
def test_full_disk_stops_the_sync_with_one_line_and_the_next_sync_completes(
    tmp_path: Path, cli_server, small: str, says: list[str]
) -> None:
    src, folder, out = tmp_path / "server", tmp_path / "client", tmp_path / "out"
    write_file(src, "small.txt", b"fits\n")
    for i in range(6):  # 6 MiB for a 3 MiB disk
        write_file(src, f"big/{i}.bin", payload(MIB, seed=i))
    for i in range(40):  # 40 files for 24 inodes
        write_file(src, f"many/{i}.txt", payload(100, seed=100 + i))
    for d in (folder, out / "after-first", out / "after-second"):
        d.mkdir(parents=True)
    server = cli_server(src)

    ran = subprocess.run(
        [
            *in_own_mount_namespace(),
            "sh",
            "-c",
            SCRIPT,
            "sh",
            str(BIN_DIR / "ssp-client"),
            str(folder),
            HOST,
            str(server.port),
            str(out),
            small,
        ],
        capture_output=True,
        text=True,
        env=cli_env(SSP_SECRET=SECRET),
        stdin=subprocess.DEVNULL,
        timeout=HANG_S,
    )
    assert ran.returncode == 0, f"could not run the client on a small tmpfs: {ran.stderr}"

    # First sync: stopped by the full disk, with one line that says so and what to do.
    assert (out / "first.rc").read_text().strip() == "1", (out / "first.err").read_text()
    line = one_error_line((out / "first.err").read_text(), "ssp-client")
    assert all(words in line for words in says), line
    # Nothing torn: whatever is at a final path is a complete, identical copy.
    expected = snapshot(src)
    after_first = snapshot(out / "after-first")
    visible = {rel: e for rel, e in after_first.items() if ".ssp-part-" not in rel}
    assert len(visible) < len(expected), "the small disk cannot hold everything"
    for rel, entry in visible.items():
        assert rel in expected, f"unexpected file {rel}"
        assert (entry.size, entry.sha256) == (expected[rel].size, expected[rel].sha256), rel

    # Space freed: the next sync completes and leaves no temp file behind.
    second_err = (out / "second.err").read_text()
    assert (out / "second.rc").read_text().strip() == "0", second_err
    assert_synced(src, out / "after-second")
