"""The key store under faults: readers open a store a writer left mid-commit; unsafe files are refused.

A real child process writes to the store and is killed with SIGKILL right
before each of its commits, with its changes already in the file and the
original pages in the journal (a hot journal). Every read-only open must
then work and see the state before that commit: as a reader allowed to
write the file (it rolls the journal back), and as one that may only read
it through the store's group (it reads a rolled-back private copy).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import mailseal
from mailseal.core.algorithms import KeyType
from mailseal.core.keymaterial import generate_private_key
from mailseal.errors import InsecureKeyFileError
from mailseal.keys.lifecycle import records_for
from mailseal.keys.sqlite_store import SqliteKeyStore
from mailseal.keys.store import Change, KeyState, NewKey
from support.clock import FIXED_NOW
from support.crashcommit import COMMITS, DOMAIN, write_sequence

SRC = Path(mailseal.__file__).parents[1]
TESTS = Path(__file__).parents[2]
NOBODY = 65534

State = list[tuple[str, str, str | None]]


def state(store: SqliteKeyStore) -> State:
    return [(e.selector, str(e.state), e.last_error) for e in store.entries()]


def make_store(path: Path) -> None:
    """A store whose key ``first`` signs."""
    store = SqliteKeyStore(path)
    key = generate_private_key(KeyType.ED25519)
    record, revoked = records_for(key.key_type, key.public_key_b64())
    entry = store.add(
        NewKey(DOMAIN, "first", key.key_type, key.bits, key.to_pem(), record, revoked, FIXED_NOW)
    )
    store.apply(
        [
            Change.to(
                entry,
                state=KeyState.ACTIVE,
                published_at=FIXED_NOW,
                visible_at=FIXED_NOW,
                activated_at=FIXED_NOW,
            )
        ]
    )
    store.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> list[State]:
    """The state before each commit of :func:`write_sequence`, and after the last."""
    path = tmp_path_factory.mktemp("reference") / "data" / "keys.db"
    make_store(path)
    store = SqliteKeyStore(path)
    seen = [state(store)]
    write_sequence(store, lambda: seen.append(state(store)))
    store.close()
    assert len(seen) == COMMITS + 1
    return seen


def kill_before_commit(path: Path, kill_at: int) -> None:
    child = subprocess.run(
        [sys.executable, "-m", "support.crashcommit", str(path), str(kill_at)],
        env={**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{TESTS}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, (child.stdout, child.stderr)
    journal = path.with_name(path.name + "-journal")
    assert journal.stat().st_size > 0  # the writer left a hot journal


@pytest.mark.parametrize("kill_at", range(1, COMMITS + 1))
def test_readers_open_a_store_left_mid_commit(tmp_path: Path, reference: list[State], kill_at: int) -> None:
    path = tmp_path / "data" / "keys.db"
    make_store(path)
    running = SqliteKeyStore(path, readonly=True)  # a milter that was already running
    kill_before_commit(path, kill_at)
    starting = SqliteKeyStore(path, readonly=True)  # a milter (re)starting in the window
    assert state(starting) == reference[kill_at - 1]
    assert [k.selector for k in starting.signing_keys(DOMAIN)]  # some key still signs
    assert state(running) == reference[kill_at - 1]
    journal = path.with_name("keys.db-journal")
    assert not journal.exists() or journal.read_bytes()[:1] in (b"", b"\0"), journal.read_bytes()[
        :32
    ]  # rolled back
    starting.close()
    running.close()
    writer = SqliteKeyStore(path)  # and the writer carries on from there
    assert state(writer) == reference[kill_at - 1]
    writer.close()


class Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def read_as_nobody(path: Path) -> tuple[State, list[str], int] | str:
    """Open the store read-only three times in a forked child that dropped to nobody (+ the store's group).

    Returns what it read, which keys sign, and how many warnings were logged.
    """
    readable, writable = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 0
        try:
            os.close(readable)
            os.setgroups([path.stat().st_gid])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            handler = Counting()
            logging.getLogger("mailseal.keys.sqlite_store").addHandler(handler)
            try:
                for _ in range(3):  # as the milter does, every few seconds
                    store = SqliteKeyStore(path, readonly=True)
                    result: object = [state(store), [k.selector for k in store.signing_keys(DOMAIN)]]
                    store.close()
                result = [*result, handler.count]  # type: ignore[misc]
            except Exception as exc:  # the parent asserts on the text
                result = f"{type(exc).__name__}: {exc}"
            os.write(writable, json.dumps(result).encode())
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(writable)
    with os.fdopen(readable, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0 and data
    answer = json.loads(data)
    if isinstance(answer, str):
        return answer
    return [tuple(row) for row in answer[0]], answer[1], answer[2]


@pytest.fixture
def shared_folder() -> Iterator[Path]:
    """A store folder nobody may reach through the store's group (tmp_path's parents are private)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to read the store as another user")
    top = Path(tempfile.mkdtemp(prefix="mailseal-group-"))
    try:
        folder = top / "data"
        folder.mkdir(mode=0o750)
        os.chown(folder, 0, NOBODY)
        top.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("kill_at", [1, 4])
def test_a_group_reader_reads_a_rolled_back_copy(
    shared_folder: Path, reference: list[State], kill_at: int
) -> None:
    path = shared_folder / "keys.db"
    make_store(path)
    os.chown(path, 0, NOBODY)
    path.chmod(0o640)
    assert read_as_nobody(path) == (reference[0], ["first"], 0)
    kill_before_commit(path, kill_at)
    journal = path.with_name("keys.db-journal")
    os.chown(journal, 0, NOBODY)  # SQLite gives a journal its database's owner and mode
    journal.chmod(0o640)
    expected = reference[kill_at - 1]
    signing = [s for s, st, _ in sorted(expected, key=lambda r: r[0] != "second") if st == "active"]
    assert read_as_nobody(path) == (expected, signing, 1)  # the warning is not repeated every open
    assert journal.exists()  # nobody could not roll it back; the copy was private and is gone
    assert not list(Path("/dev/shm").glob("mailseal-store-*"))
    writer = SqliteKeyStore(path)
    assert state(writer) == expected
    writer.close()


def test_store_owned_by_another_user_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys.db"
    make_store(path)
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(
        InsecureKeyFileError, match=rf"belongs to uid {NOBODY}.*fix with: chown {os.geteuid()} "
    ):
        SqliteKeyStore(path)
    with pytest.raises(InsecureKeyFileError, match=rf"belongs to uid {NOBODY}"):
        SqliteKeyStore(path, readonly=True)  # not in its group either


@pytest.mark.parametrize(("mode", "who"), [(0o777, "others"), (0o1777, "others"), (0o770, "its group")])
def test_store_in_a_folder_others_may_write_is_refused(tmp_path: Path, mode: int, who: str) -> None:
    path = tmp_path / "data" / "keys.db"
    make_store(path)
    path.parent.chmod(mode)
    with pytest.raises(
        InsecureKeyFileError, match=rf"writable by {who} .*fix with: chmod go-w {path.parent}"
    ):
        SqliteKeyStore(path, readonly=True)


def test_store_in_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys.db"
    make_store(path)
    os.chown(path.parent, NOBODY, NOBODY)
    with pytest.raises(InsecureKeyFileError, match=rf"belongs to uid {NOBODY}, who could replace the store"):
        SqliteKeyStore(path)


def test_a_journal_the_reader_cannot_read_is_a_clear_error(shared_folder: Path) -> None:
    path = shared_folder / "keys.db"
    make_store(path)
    os.chown(path, 0, NOBODY)
    path.chmod(0o640)
    kill_before_commit(path, 2)
    path.with_name("keys.db-journal").chmod(0o600)  # owner only: the group reader cannot recover
    answer = read_as_nobody(path)
    assert isinstance(answer, str) and answer.startswith("KeyStoreError: ")
    assert "a writer died mid-commit, and its journal cannot be read to recover (Permission denied)" in answer
