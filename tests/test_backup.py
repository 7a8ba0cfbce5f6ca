"""``credit-node backup`` and ``credit-node restore``: a node comes back whole, or not at all.

An operator who lost a node's machine restores its snapshot and finds the same
records, the same ledger (``audit verify`` passes) and the same keys. A snapshot that
was altered, cut short, or is older than what the witnesses cosigned is refused,
and so is a home or database that holds something, unless forced: then what was
there is kept aside. A snapshot taken while the ledger grows is of one moment.

The nodes are real homes (``credit-node init``, department files imported, ledger
entries committed), on SQLite and on PostgreSQL; the witness is a real member of a
two-member federation on loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import sqlite3
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import postgres_schema
from fedharness import Federation
from sqlalchemy import Dialect, bindparam, insert, inspect, select
from typer.testing import CliRunner

from creditexchange.clock import now_us
from creditexchange.devtools.sample import showcase_subject, write_sample
from creditexchange.errors import ConfigError, LedgerError, QueryRefused
from creditexchange.node.app.backup import DATABASE_MEMBER, MANIFEST_MEMBER, back_up, restore
from creditexchange.node.app.config import load_config
from creditexchange.node.app.home import create_home
from creditexchange.node.app.wiring import open_audit_log, open_node
from creditexchange.node.cli import app
from creditexchange.node.database import create_database_engine
from creditexchange.node.database.driver import Prepared
from creditexchange.node.database.models import ENTRIES, NONCES, Base
from creditexchange.node.ledger import AuditLog, entries
from creditexchange.node.ledger.witnessing import RECEIVED, WitnessRecords
from creditexchange.node.records.importer import FORMATS, import_file

MEMBER = "huizhou"
APPENDER = "appender"  # the requester of the nonces written with the appended entries
runner = CliRunner()


# --- helpers ------------------------------------------------------------------------------------


def cli(*argv: str) -> Any:
    return runner.invoke(app, list(argv), env={"COLUMNS": "1000"})


def add_entries(log: AuditLog, n: int, note: str = "maintenance") -> None:
    for i in range(n):
        log.commit([entries.maintenance(f"{note} {i}", MEMBER, now_us())])


def make_node(home: Path, database_url: str | None, incoming: Path) -> None:
    """A node as an operator has one: init, department files imported, ledger entries."""
    create_home(home, MEMBER, database_url=database_url)
    node = open_node(home)
    try:
        for path in write_sample(node.catalog, MEMBER, 5, 7, incoming):
            if path.suffix in FORMATS:
                import_file(
                    node.database, node.catalog, path, path.stem, reject_dir=node.config.reject_dir
                )
        add_entries(open_audit_log(node.config, node.database), 12)
    finally:
        node.database.dispose()


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def database_rows(home: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the node's database, in a comparable order."""
    engine = create_database_engine(load_config(home).database_url)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) == {
                *Base.metadata.tables,
                "alembic_version",
            }
            return {
                table.name: sorted(
                    (tuple(_plain(v) for v in row) for row in conn.execute(select(table))),
                    key=repr,
                )
                for table in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def ledger_of(home: Path) -> AuditLog:
    config = load_config(home)
    return open_audit_log(config, create_database_engine(config.database_url))


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``root`` with its mode and content (folders with their mode); a
    SQLite database's files by name and mode only (opening one may rewrite its WAL):
    compare those with :func:`database_rows`."""
    return {
        str(p.relative_to(root)): (
            stat.S_IMODE(p.lstat().st_mode),
            p.read_bytes() if p.is_file() and not p.name.startswith("node.db") else b"",
        )
        for p in sorted(root.rglob("*"))
        if not p.name.endswith(("-wal", "-shm"))
    }


def leftovers(folder: Path) -> list[str]:
    """Staging folders a restore or backup left behind (it must leave none)."""
    return sorted(p.name for p in folder.iterdir() if ".restore-" in p.name or ".backup-" in p.name)


@dataclasses.dataclass
class Source:
    """A node, a snapshot of it, and its rows and files as they were at the snapshot."""

    backend: str
    root: Path
    home: Path
    archive: Path
    rows: dict[str, list[tuple[Any, ...]]]
    size: int
    checkpoint: str
    fresh_database: Callable[[], contextlib.AbstractContextManager[str | None]]

    def restore_args(self, database: str | None) -> list[str]:
        return [] if database is None else ["--database-url", database]


@contextlib.contextmanager
def _as_it_says() -> Iterator[str | None]:
    yield None  # where the snapshot's node.toml says: SQLite in the home


@contextlib.contextmanager
def _in_the_home() -> Iterator[str | None]:
    yield "sqlite:///data/node.db"


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def source(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Source]:
    root = tmp_path_factory.mktemp(f"backup-{request.param}")
    with contextlib.ExitStack() as stack:
        url = None
        fresh: Callable[[], contextlib.AbstractContextManager[str | None]] = _as_it_says
        if request.param == "postgres":
            url = stack.enter_context(postgres_schema())
            fresh = postgres_schema
        make_node(root / "node", url, root / "incoming")
        archive = root / "node.snapshot"
        result = cli("backup", str(archive), "--home", str(root / "node"))
        assert result.exit_code == 0, result.output
        log = ledger_of(root / "node")
        yield Source(
            request.param,
            root,
            root / "node",
            archive,
            database_rows(root / "node"),
            log.size(),
            log.latest_checkpoint(),
            fresh,
        )
        log.engine.dispose()


@dataclasses.dataclass
class Restored:
    """A node restored from the source's snapshot (on PostgreSQL, into a schema of its own)."""

    home: Path
    url: str | None


@pytest.fixture(scope="module")
def restored(source: Source) -> Iterator[Restored]:
    """Shared by the tests below, which use it in file order: they read it, then replace it
    (forced), then grow its ledger, then damage it; each asserts only what it set up."""
    with source.fresh_database() as url:
        home = source.root / "restored"
        result = cli("restore", str(source.archive), "--home", str(home), *source.restore_args(url))
        assert result.exit_code == 0, result.output
        assert f"restored {MEMBER}" in result.output
        yield Restored(home, url)


def members(archive: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(archive) as tar:
        return [(m, (tar.extractfile(m) or io.BytesIO()).read() if m.isreg() else b"") for m in tar]


def write_members(path: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in items:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def rehashed(items: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    """The members with a manifest that states their sizes and hashes as they now are:
    what someone who alters a snapshot on purpose writes."""
    manifest = json.loads(items[0][1])
    manifest["files"] = {
        info.name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for info, data in items[1:]
        if info.isreg()
    }
    body = json.dumps(manifest).encode()
    head = items[0][0]
    head.size = len(body)
    for info, data in items[1:]:
        info.size = len(data)
    return [(head, body), *items[1:]]


# --- a snapshot, and a node restored from it ----------------------------------------------------


def test_a_snapshot_holds_the_node_with_private_files_and_a_manifest_of_hashes(
    source: Source,
) -> None:
    assert stat.S_IMODE(source.archive.stat().st_mode) == 0o600
    items = members(source.archive)
    assert items[0][0].name == MANIFEST_MEMBER  # first, so it is read before anything else
    manifest = json.loads(items[0][1])
    names = {info.name for info, _ in items[1:]}
    assert (
        names
        == set(manifest["files"])
        >= {
            "home/node.toml",
            "home/keys/signing.key",
            "home/keys/signing.pub",
            "home/keys/subject-hmac.key",
            DATABASE_MEMBER,
        }
    )
    keys = source.home.glob("keys/**/*")  # every key file, a rotation's too
    assert {f"home/{p.relative_to(source.home).as_posix()}" for p in keys if p.is_file()} <= names
    for info, data in items:
        assert info.isreg() and stat.S_IMODE(info.mode) == 0o600, info.name
        if info.name != MANIFEST_MEMBER:
            assert manifest["files"][info.name] == {
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
    stored = {info.name: data for info, data in items}
    assert stored["home/keys/signing.key"] == (source.home / "keys/signing.key").read_bytes()
    assert manifest["member_id"] == MEMBER
    assert manifest["database"]["backend"] == (
        "sqlite" if source.backend == "sqlite" else "postgresql"
    )
    assert manifest["database"]["tables"]["records"] == len(source.rows["records"]) > 0
    assert manifest["ledger"]["size"] == source.size == 12
    assert manifest["ledger"]["checkpoint"] == source.checkpoint
    dt.datetime.fromisoformat(manifest["created"])


def test_a_restored_node_has_the_same_records_ledger_and_keys_and_its_ledger_verifies(
    source: Source, restored: Restored
) -> None:
    home = restored.home
    verified = cli("audit", "verify", "--home", str(home))
    assert verified.exit_code == 0, verified.output
    assert "ledger verified: 12 entries" in verified.output
    assert database_rows(home) == source.rows
    if restored.url is None:  # where the snapshot's node.toml says: the settings as they were
        assert (home / "node.toml").read_bytes() == (source.home / "node.toml").read_bytes()
    for key in ("keys/signing.key", "keys/signing.pub", "keys/subject-hmac.key"):
        assert (home / key).read_bytes() == (source.home / key).read_bytes()
        assert stat.S_IMODE((home / key).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert leftovers(source.root) == []
    # the restored node takes new rows: its serial ids go on past the copied ones
    node = open_node(home)
    files = write_sample(node.catalog, MEMBER, 2, 8, source.root / "more")
    summary = import_file(
        node.database, node.catalog, files[0], files[0].stem, reject_dir=node.config.reject_dir
    )
    assert summary.batch_id > max(row[0] for row in source.rows["import_batches"])
    node.database.dispose()


def test_a_snapshot_restores_into_the_other_backend(source: Source) -> None:
    target_cm: contextlib.AbstractContextManager[str | None] = (
        postgres_schema() if source.backend == "sqlite" else _in_the_home()
    )
    with target_cm as url:
        home = source.root / "crossed"
        restore(source.archive, home, database_url=url)
        assert database_rows(home) == source.rows
        assert cli("audit", "verify", "--home", str(home)).exit_code == 0


def test_a_backup_never_replaces_a_file(source: Source) -> None:
    taken = source.root / "taken"
    taken.write_text("an operator's file")
    result = cli("backup", str(taken), "--home", str(source.home))
    assert result.exit_code == 2
    assert "never replaces a file" in result.output
    assert taken.read_text() == "an operator's file"
    assert leftovers(source.root) == []


# --- refusals ------------------------------------------------------------------------------------

ON_SQLITE = pytest.mark.parametrize("source", ["sqlite"], indirect=True)
"""For what does not depend on the backend (the archive, the home): checked once."""


def _altered_database(sql: str) -> Callable[[list[tuple[tarfile.TarInfo, bytes]], Path], None]:
    """A change of the snapshot's database by ``sql``."""

    def change(items: list[tuple[tarfile.TarInfo, bytes]], tmp: Path) -> None:
        database = tmp / "altered.sqlite"
        index = next(i for i, (info, _) in enumerate(items) if info.name == DATABASE_MEMBER)
        database.write_bytes(items[index][1])
        with contextlib.closing(sqlite3.connect(database)) as conn:
            conn.execute(sql)
            conn.commit()
        items[index] = (items[index][0], database.read_bytes())

    return change


def _flip_a_bit(items: list[tuple[tarfile.TarInfo, bytes]], _tmp: Path) -> None:
    index = next(i for i, (info, _) in enumerate(items) if info.name == "home/keys/signing.key")
    data = bytearray(items[index][1])
    data[0] ^= 1
    items[index] = (items[index][0], bytes(data))


def _symlink(items: list[tuple[tarfile.TarInfo, bytes]], _tmp: Path) -> None:
    link = tarfile.TarInfo("home/keys/other.key")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    items.append((link, b""))


def _extra(items: list[tuple[tarfile.TarInfo, bytes]], _tmp: Path) -> None:
    items.append((tarfile.TarInfo("home/extra.txt"), b"not listed"))


def _traversal(items: list[tuple[tarfile.TarInfo, bytes]], _tmp: Path) -> None:
    items.append((tarfile.TarInfo("home/../../escaped.txt"), b"out of the home"))


def _wal(items: list[tuple[tarfile.TarInfo, bytes]], _tmp: Path) -> None:
    items.append((tarfile.TarInfo("home/data/node.db-wal"), b"pages replayed on opening"))


def _twice(items: list[tuple[tarfile.TarInfo, bytes]], _tmp: Path) -> None:
    items.append(items[-1])


def _manifest_last(items: list[tuple[tarfile.TarInfo, bytes]], _tmp: Path) -> None:
    items.append(items.pop(0))


ALTERED = [  # (case, change, rehash the manifest, what the refusal says)
    (
        "a ledger entry altered",
        _altered_database(
            "UPDATE ledger_entries SET body = CAST(body || x'00' AS BLOB) WHERE idx = 3"
        ),
        True,
        "entry 3: its stored bytes hash to",
    ),
    (
        "a ledger entry deleted",
        _altered_database("DELETE FROM ledger_entries WHERE idx = 7"),
        True,
        "entry 7 is missing",
    ),
    (
        "a ledger entry of another type",
        _altered_database("UPDATE ledger_entries SET body = 'text' WHERE idx = 2"),
        True,
        "ledger_entries.body a value that is not blob",
    ),
    ("a key altered", _flip_a_bit, False, "does not hash to the SHA-256"),
    ("a symbolic link", _symlink, False, "not a regular file"),
    ("a file the manifest does not list", _extra, False, "does not list"),
    ("a path out of the home", _traversal, True, "not a plain relative path"),
    ("a WAL beside the database", _wal, True, "where the node's database goes"),
    ("a file twice", _twice, False, "twice"),
    ("the manifest not first", _manifest_last, False, f"does not begin with {MANIFEST_MEMBER}"),
    ("a file missing", lambda i, _t: i.pop(2), False, "incomplete"),
]


@ON_SQLITE
@pytest.mark.parametrize(
    ("change", "rehash", "said"), [c[1:] for c in ALTERED], ids=[c[0] for c in ALTERED]
)
def test_an_altered_snapshot_is_refused_and_nothing_is_written(
    source: Source,
    tmp_path: Path,
    change: Callable[[list[tuple[tarfile.TarInfo, bytes]], Path], None],
    rehash: bool,
    said: str,
) -> None:
    items = members(source.archive)
    change(items, tmp_path)
    archive = write_members(tmp_path / "altered.snapshot", rehashed(items) if rehash else items)
    home = tmp_path / "home"
    result = cli("restore", str(archive), "--home", str(home))
    assert result.exit_code == 2, result.output
    assert said in result.output
    assert "Nothing was restored" in result.output
    assert not home.exists() and not list(tmp_path.parent.rglob("escaped.txt"))
    assert leftovers(tmp_path) == []


@ON_SQLITE
def test_a_truncated_or_foreign_file_is_refused(source: Source, tmp_path: Path) -> None:
    data = source.archive.read_bytes()
    for name, content in (("cut", data[: len(data) // 2]), ("garbage", os.urandom(4096))):
        archive = tmp_path / name
        archive.write_bytes(content)
        with pytest.raises(ConfigError, match="damaged or incomplete") as refused:
            restore(archive, tmp_path / f"home-{name}")
        assert "use another copy of the snapshot" in str(refused.value)
        assert not (tmp_path / f"home-{name}").exists()
    assert leftovers(tmp_path) == []


def test_a_home_that_holds_something_is_refused_unless_forced_and_kept_aside_then(
    source: Source, restored: Restored
) -> None:
    home, url = restored.home, restored.url
    (home / "rejects" / "operator-notes.txt").write_text("keep me")
    before, rows = tree(home), database_rows(home)
    result = cli("restore", str(source.archive), "--home", str(home), *source.restore_args(url))
    assert result.exit_code == 2
    assert "is not empty" in result.output and "--force" in result.output
    assert tree(home) == before and database_rows(home) == rows

    forced = ["--force", "--offline", *source.restore_args(url)]
    result = cli("restore", str(source.archive), "--home", str(home), *forced)
    assert result.exit_code == 0, result.output
    aside = [p for p in source.root.iterdir() if p.name.startswith("restored.replaced-")]
    assert len(aside) == 1 and stat.S_IMODE(aside[0].stat().st_mode) == 0o700
    assert f"what was replaced is kept in {aside[0]}" in result.output
    assert (aside[0] / "home/rejects/operator-notes.txt").read_text() == "keep me"
    assert (aside[0] / "home/node.toml").read_bytes() == before["node.toml"][1]
    if source.backend == "postgres":  # the database outside the home: a copy of its rows
        with contextlib.closing(sqlite3.connect(aside[0] / DATABASE_MEMBER)) as copy:
            counted = copy.execute("SELECT count(*) FROM import_batches").fetchone()[0]
        assert counted == len(rows["import_batches"])
    assert not (home / "rejects" / "operator-notes.txt").exists()
    assert database_rows(home) == source.rows
    assert cli("audit", "verify", "--home", str(home)).exit_code == 0


@ON_SQLITE
def test_another_members_home_is_refused_even_when_forced(source: Source, tmp_path: Path) -> None:
    create_home(tmp_path / "shenzhen", "shenzhen")
    before = tree(tmp_path / "shenzhen")
    with pytest.raises(ConfigError, match="holds the node of shenzhen"):
        restore(source.archive, tmp_path / "shenzhen", force=True)
    assert tree(tmp_path / "shenzhen") == before


def test_a_snapshot_older_than_the_ledger_it_replaces_is_refused_even_when_forced(
    source: Source, restored: Restored
) -> None:
    home = restored.home
    log = ledger_of(home)
    add_entries(log, 3, "after the snapshot")
    grown = log.size()
    before, rows = tree(home), database_rows(home)
    aside = sorted(source.root.glob("restored.replaced-*"))
    with pytest.raises(LedgerError) as refused:
        restore(source.archive, home, force=True, ask_witnesses=False, database_url=restored.url)
    message = str(refused.value)
    assert f"checkpoint of {grown} entries signed by this node" in message
    assert "the snapshot's ledger has 12" in message and "roll the log back" in message
    assert "Nothing was restored" in message
    assert tree(home) == before and database_rows(home) == rows
    assert sorted(source.root.glob("restored.replaced-*")) == aside  # nothing put aside


def test_a_backup_refuses_a_node_whose_ledger_does_not_verify(
    source: Source, restored: Restored
) -> None:
    log = ledger_of(restored.home)
    with log.engine.begin() as conn:
        body = conn.execute(select(ENTRIES.c.body).where(ENTRIES.c.idx == 5)).scalar_one()
        conn.execute(ENTRIES.update().where(ENTRIES.c.idx == 5).values(body=bytes(body) + b"\0"))
    archive = source.root / "tampered.snapshot"
    result = cli("backup", str(archive), "--home", str(restored.home))
    assert result.exit_code == 2
    assert "does not verify" in result.output and "entry 5" in result.output
    assert not archive.exists() and leftovers(source.root) == []


# --- a snapshot while the ledger grows ---------------------------------------------------------


_SPEND_NONCE = Prepared(
    insert(NONCES).values(
        requester=bindparam("requester"), nonce=bindparam("nonce"), created_us=bindparam("us")
    )
)


class SpentNonce:
    """A side write committed with each appended entry, as the replay guard's is."""

    def write(self, cursor: Any, dialect: Dialect) -> None:
        _SPEND_NONCE.execute(
            cursor, dialect, {"requester": APPENDER, "nonce": os.urandom(16), "us": now_us()}
        )


def test_a_snapshot_taken_while_entries_are_appended_is_of_one_moment(source: Source) -> None:
    log = ledger_of(source.home)
    start = log.size()
    stop = threading.Event()
    failures: list[BaseException] = []

    def append() -> None:
        try:
            while not stop.wait(0.002):  # a busy node, leaving the machine some room
                log.commit(
                    [entries.maintenance("appended", MEMBER, now_us())], side_writes=[SpentNonce()]
                )
        except BaseException as exc:  # reported below
            failures.append(exc)

    appender = threading.Thread(target=append)
    appender.start()
    try:
        while log.size() < start + 5:
            stop.wait(0.01)
        snapshots = []
        for n in range(2):
            archive = source.root / f"busy-{n}.snapshot"
            back_up(source.home, archive)
            snapshots.append(archive)
    finally:
        stop.set()
        appender.join()
    assert not failures
    sizes = []
    for n, archive in enumerate(snapshots):
        home = source.root / f"busy-{n}"
        restore(archive, home, database_url="sqlite:///data/node.db")  # the ledger verified whole
        size = ledger_of(home).size()
        engine = create_database_engine(load_config(home).database_url)
        with engine.connect() as conn:
            nonces = len(conn.execute(select(NONCES).where(NONCES.c.requester == APPENDER)).all())
        engine.dispose()
        assert nonces == size - start  # each entry with its nonce: none without the other
        sizes.append(size)
    assert start + 5 <= sizes[0] < sizes[1] <= log.size()  # taken while the log grew


# --- what the witnesses cosigned ------------------------------------------------------------------

BANK = {
    "purpose": "bank_credit",
    "legal_basis": "《征信业管理条例》第十四条",
    "case_reference": "LOAN-2026-0042",
    "officer": "credit-review-3",
}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    mp = pytest.MonkeyPatch()
    mp.setenv("CREDIT_NODE_WITNESS_INTERVAL_S", "0")
    try:
        federation = Federation(
            tmp_path_factory.mktemp("witnessed"), (MEMBER, "shenzhen"), {}, subjects=5
        )
    finally:
        mp.undo()
    try:
        yield federation
    finally:
        federation.close()


def grow_and_witness(fed: Federation) -> int:
    """shenzhen asks huizhou (its ledger grows), then witnesses and cosigns its log."""
    for _ in range(2):
        with contextlib.suppress(QueryRefused):
            fed.ask("shenzhen", showcase_subject(MEMBER, 2026), to=MEMBER, **BANK)
    results = fed.run(fed.servers["shenzhen"].witness.round())
    assert [r.outcome for r in results] == ["cosigned"], results
    assert results[0].size is not None
    return results[0].size


def test_a_snapshot_older_than_what_a_witness_cosigned_is_refused(
    fed: Federation, tmp_path: Path
) -> None:
    home = fed.nodes[MEMBER].home
    grow_and_witness(fed)
    older = tmp_path / "older.snapshot"
    back_up(home, older)  # while huizhou serves
    cosigned = grow_and_witness(fed)
    older_size = json.loads(members(older)[0][1])["ledger"]["size"]
    assert older_size < cosigned

    # the witness, asked over the federation, says it cosigned a larger log
    with pytest.raises(LedgerError) as refused:
        restore(older, tmp_path / "asked")
    message = str(refused.value)
    assert f"shenzhen cosigned a checkpoint of {cosigned} entries" in message
    assert f"the log has {older_size} entries" in message and "Nothing was restored" in message
    assert not (tmp_path / "asked").exists()

    # offline, a cosigned checkpoint the operator gives says the same, in either form
    latest = fed.run(fed.client("shenzhen").checkpoint(MEMBER))
    assert len(latest.cosignatures) == 1
    receipt = tmp_path / "receipt.json"
    receipt.write_text(
        json.dumps(
            {
                "receipt": {
                    "checkpoint": latest.checkpoint,
                    "cosignatures": list(latest.cosignatures),
                }
            }
        )
    )
    note = tmp_path / "cosigned.txt"
    note.write_text(latest.checkpoint + latest.cosignatures[0].rstrip("\n") + "\n")
    for given in (receipt, note):
        with pytest.raises(LedgerError, match=f"cosigned a checkpoint of {cosigned} entries"):
            restore(older, tmp_path / "given", ask_witnesses=False, cosigned=[given])
        assert not (tmp_path / "given").exists()

    # offline and told nothing, it is restored; the witnessed verify then finds the rollback
    result = cli("restore", str(older), "--home", str(tmp_path / "blind"), "--offline")
    assert result.exit_code == 0, result.output
    assert "checked against no witness (offline: not asked)" in result.output
    witnessed = cli("audit", "verify", "--witnessed", "--home", str(tmp_path / "blind"))
    assert witnessed.exit_code == 1 and "rolled back" in witnessed.output

    # a snapshot as large as what was cosigned is restored, checked against the witness
    current = tmp_path / "current.snapshot"
    back_up(home, current)
    result = cli("restore", str(current), "--home", str(tmp_path / "current"))
    assert result.exit_code == 0, result.output
    assert (
        "shenzhen" in result.output and "checked against the witnesses asked now" in result.output
    )

    # the node's own database, replaced with --force, is checked too, witnesses or not
    fed.stop(MEMBER)
    try:
        held = WitnessRecords(ledger_of(home).engine).cosignatures(RECEIVED)
        assert [h.member for h in held] == ["shenzhen"]
        before, rows = tree(home), database_rows(home)
        with pytest.raises(LedgerError, match="roll the log back"):
            restore(older, home, force=True, ask_witnesses=False)
        assert tree(home) == before and database_rows(home) == rows
    finally:
        fed.start(MEMBER)


def test_a_restore_no_witness_can_be_asked_about_is_refused_unless_offline(
    fed: Federation, tmp_path: Path
) -> None:
    snapshot = tmp_path / "node.snapshot"
    back_up(fed.nodes[MEMBER].home, snapshot)
    fed.stop("shenzhen")
    try:
        with pytest.raises(LedgerError) as refused:
            restore(snapshot, tmp_path / "alone")
        assert "none of the witnesses could be asked" in str(refused.value)
        assert "shenzhen" in str(refused.value) and "--offline" in str(refused.value)
        assert not (tmp_path / "alone").exists()
    finally:
        fed.start("shenzhen")
