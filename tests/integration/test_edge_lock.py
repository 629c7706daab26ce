"""Embedded Qdrant Edge belongs to one process: a second process gets a clear error, never the shard.

Real processes: a child Python process opens the shard and keeps serving it while this (pytest) process
tries to open the same shard; then the child exits cleanly, or is killed with SIGKILL, and the shard
opens here. Within one process several ``EdgeIndex`` objects may share the shard, as tests do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock, Timeout

from ragbot.index.edge import EdgeIndex
from ragbot.index.lock import ShardInUseError, lock_path
from ragbot.index.points import chunk_point_id
from ragbot.types import Chunk, EncodedChunk, SparseVector

pytestmark = pytest.mark.integration

BOT = "bot-lock"

#: The child: opens the shard, writes one point per ``add`` line, answers ``count``, closes on ``exit``.
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ragbot.index.edge import EdgeIndex
    from ragbot.index.points import chunk_point_id
    from ragbot.types import Chunk, EncodedChunk, SparseVector

    def point(n):
        uri = f"https://example.org/doc{n}"
        chunk = Chunk(id=chunk_point_id("bot-lock", uri, 0, f"text {n}"), bot_id="bot-lock",
                      source_id=f"doc{n}", uri=uri, title="t", text=f"text {n}", chunk_index=0)
        return EncodedChunk(chunk, SparseVector((1, 2), (1.0, 0.5)), (1.0, 0.0, 0.0, float(n)))

    index = EdgeIndex(Path(sys.argv[1]), "kb", background_optimize=False)
    added = 0
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "add":
            added += 1
            index.upsert([point(added)])
            print(index.count("bot-lock"), flush=True)
        elif command == "count":
            print(index.count("bot-lock"), flush=True)
        elif command == "exit":
            break
    index.close()
    print("closed", flush=True)
    """
)


class Child:
    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.read() == "ready"

    def read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"the child process ended: {err[-2000:]}")
        return line

    def ask(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def child(tmp_path: Path) -> Iterator[Child]:
    c = Child(tmp_path)
    yield c
    c.stop()


def _point(n: int) -> EncodedChunk:
    uri = f"https://example.org/here{n}"
    chunk = Chunk(
        id=chunk_point_id(BOT, uri, 0, f"here {n}"),
        bot_id=BOT,
        source_id=f"here{n}",
        uri=uri,
        title="t",
        text=f"here {n}",
        chunk_index=0,
    )
    return EncodedChunk(chunk, SparseVector((1, 3), (1.0, 1.0)), (0.0, 1.0, 0.0, float(n)))


def test_a_second_process_gets_a_clear_error_and_the_first_keeps_working(
    child: Child, tmp_path: Path
) -> None:
    assert child.ask("add") == "1"
    with pytest.raises(ShardInUseError) as refused:
        EdgeIndex(tmp_path, "kb")
    message = str(refused.value)
    assert "another process" in message and "RAGBOT_QDRANT_URL" in message and str(tmp_path / "kb") in message
    assert child.ask("add") == "2"  # the refused open touched nothing
    assert child.ask("exit") == "closed"
    child.proc.wait(timeout=30)

    index = EdgeIndex(tmp_path, "kb")  # free once the owner closed it
    try:
        assert index.count(BOT) == 2
        index.upsert([_point(1)])
        assert index.count(BOT) == 3
    finally:
        index.close()


def test_a_killed_owner_leaves_no_stale_lock(child: Child, tmp_path: Path) -> None:
    assert child.ask("add") == "1"
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait(timeout=30)
    index = EdgeIndex(tmp_path, "kb")
    try:
        index.count(BOT)  # opens and answers; what a killed writer left unflushed is the engine's WAL
    finally:
        index.close()


def _held_elsewhere(shard_dir: Path) -> bool:
    """Whether the lock file is held, seen the way another process sees it: a separate open file
    description (``flock`` conflicts between those even inside one process)."""
    probe = FileLock(str(lock_path(shard_dir)), thread_local=False)
    try:
        probe.acquire(blocking=False)
    except Timeout:
        return True
    probe.release()
    return False


def test_one_process_may_open_a_shard_several_times_and_the_last_close_releases_it(tmp_path: Path) -> None:
    """Counted within the process. (The engine itself refuses a second load of a shard that is open, with
    "Can't init WAL: WouldBlock"; before the first write there is nothing to load, so both objects open.)"""
    first = EdgeIndex(tmp_path, "kb", background_optimize=False)
    second = EdgeIndex(tmp_path, "kb", background_optimize=False)
    first.upsert([_point(1)])
    assert _held_elsewhere(tmp_path / "kb")
    first.close()
    first.close()  # twice is harmless and does not release the second's share
    assert _held_elsewhere(tmp_path / "kb")
    second.close()
    assert not _held_elsewhere(tmp_path / "kb")
    assert not (tmp_path / "kb" / ".kb.lock").exists()  # beside the shard, not in it
    reopened = EdgeIndex(tmp_path, "kb")
    try:
        assert reopened.count(BOT) == 1
    finally:
        reopened.close()


def test_a_shard_that_fails_to_open_releases_its_lock(tmp_path: Path) -> None:
    shard = tmp_path / "kb"
    shard.mkdir()
    (shard / "garbage").write_text("not a shard")
    with pytest.raises(Exception):  # noqa: B017 - whatever the engine raises for a broken shard
        EdgeIndex(tmp_path, "kb")
    assert not _held_elsewhere(shard)
