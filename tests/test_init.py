"""``credit-node init`` is all or nothing, and a node home can be moved.

An operator whose init failed (an unreachable database, a port out of range, a
Ctrl-C) finds nothing of the home left and runs init again; an operator who moves
or restores a home elsewhere finds every command working there.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import PG_URL, postgres_schema
from typer.testing import CliRunner

import creditexchange.node.app.home as home_module
from creditexchange.devtools.sample import write_sample
from creditexchange.errors import ConfigError, DatabaseError
from creditexchange.node.app.config import (
    home_relative_database_url,
    load_config,
    resolve_database_url,
)
from creditexchange.node.app.home import create_home
from creditexchange.node.app.wiring import open_node
from creditexchange.node.cli import app
from creditexchange.node.records.importer import import_file

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1

runner = CliRunner()


def _tree(root: Path) -> dict[str, int]:
    """Everything under ``root``, with its mode: what a failed init must leave as it was."""
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode)
        for path in sorted(root.rglob("*"))
    }


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual permissive umask: new files 0644, new folders 0755 unless made private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- all or nothing -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "home_name",
    ["hz", "srv/credit/hz"],
    ids=["a-new-home", "a-new-home-in-folders-init-creates"],
)
def test_a_failed_init_leaves_nothing_and_the_next_one_succeeds(
    tmp_path: Path, home_name: str
) -> None:
    before = _tree(tmp_path)
    home = tmp_path / home_name
    with pytest.raises(DatabaseError) as failure:
        create_home(home, "huizhou", database_url=UNREACHABLE)
    message = str(failure.value)
    assert "cannot open the database" in message
    assert f"Nothing was written ({home} was not created)" in message
    assert _tree(tmp_path) == before  # no home, no staging folder, no parent folders
    config = create_home(home, "huizhou")
    assert load_config(home).member_id == config.member_id == "huizhou"


def test_a_home_the_operator_made_stays_empty_with_its_mode_when_init_fails(
    tmp_path: Path,
) -> None:
    home = tmp_path / "hz"
    home.mkdir()
    home.chmod(0o500 | 0o200)  # 0700, made by hand
    with pytest.raises(DatabaseError, match=rf"Nothing was written \({home} is as it was\)"):
        create_home(home, "huizhou", database_url=UNREACHABLE)
    assert list(home.iterdir()) == []
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    create_home(home, "huizhou")
    assert (home / "node.toml").is_file() and not list(home.glob(".init-*"))


def test_init_fills_a_home_the_operator_made_keeping_what_it_holds(tmp_path: Path) -> None:
    home = tmp_path / "hz"
    (home / "tls").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    (home / "tls" / "node.crt").write_text("the operator's certificate\n")
    create_home(home, "huizhou")
    assert (home / "tls" / "node.crt").read_text() == "the operator's certificate\n"
    assert (home / "keys" / "signing.key").is_file()


def test_init_refuses_to_replace_a_file_in_the_home_and_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "hz"
    (home / "keys").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    key = home / "keys" / "signing.key"
    key.write_text("a key that was here before\n")
    before = _tree(tmp_path)
    with pytest.raises(ConfigError, match=r"signing\.key already exists") as refusal:
        create_home(home, "huizhou")
    assert "Nothing was written" in str(refusal.value)
    assert _tree(tmp_path) == before
    assert key.read_text() == "a key that was here before\n"


def test_what_init_created_outside_the_home_is_removed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the HMAC key and a SQLite database in folders of their own, outside the home
    monkeypatch.setenv("CREDIT_NODE_SUBJECT_HMAC_KEY", str(tmp_path / "secrets" / "hmac.key"))
    database = tmp_path / "databases" / "hz.db"
    (tmp_path / "databases").mkdir()
    database.write_bytes(b"this is not a SQLite database")
    database.chmod(0o600)
    before = _tree(tmp_path)
    with pytest.raises(DatabaseError, match="Nothing was written"):
        create_home(tmp_path / "hz", "huizhou", database_url=f"sqlite:///{database}")
    assert _tree(tmp_path) == before  # secrets/ removed; the database that was there kept
    assert database.read_bytes() == b"this is not a SQLite database"
    database.unlink()
    create_home(tmp_path / "hz", "huizhou", database_url=f"sqlite:///{database}")
    assert (tmp_path / "secrets" / "hmac.key").is_file()


def test_init_refuses_a_database_that_already_holds_a_node(tmp_path: Path) -> None:
    """Two members on one database would serve each other's records under two keys."""
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    create_home(tmp_path / "hz", "huizhou", database_url=shared)
    with pytest.raises(DatabaseError, match=r"already holds a node's tables.*Nothing was written"):
        create_home(tmp_path / "sz", "shenzhen", database_url=shared)
    assert not (tmp_path / "sz").exists()


def test_an_interrupted_init_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object) -> str:
        raise KeyboardInterrupt  # the operator's Ctrl-C during the migration

    monkeypatch.setattr(home_module, "upgrade", interrupted)
    with pytest.raises(KeyboardInterrupt):
        create_home(tmp_path / "hz", "huizhou")
    assert list(tmp_path.iterdir()) == []


def test_init_from_the_command_line_says_what_failed_and_that_nothing_was_written(
    tmp_path: Path,
) -> None:
    home = tmp_path / "hz"
    for argv, says in [
        (["--database-url", UNREACHABLE], "cannot open the database"),
        (["--grpc-port", "70000"], "--grpc-port 70000: Input should be less than"),
    ]:
        result = runner.invoke(app, ["init", "huizhou", "--home", str(home), *argv])
        assert result.exit_code == 2, result.output
        shown = " ".join(result.output.split())
        assert says in shown and "Nothing was written" in shown, result.output
        assert list(tmp_path.iterdir()) == []
    result = runner.invoke(app, ["init", "huizhou", "--home", str(home)])
    assert result.exit_code == 0, result.output


def test_a_staged_home_is_private_from_the_start_under_a_permissive_umask(
    tmp_path: Path, umask_022: None
) -> None:
    home = create_home(tmp_path / "hz", "huizhou").home
    modes = _tree(home)
    for name, mode in modes.items():
        assert mode == (0o700 if (home / name).is_dir() else 0o600), (name, oct(mode))
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


@pytest.mark.postgres
def test_a_failed_postgresql_migration_leaves_no_table_to_block_a_retry(tmp_path: Path) -> None:
    with postgres_schema() as url:
        schema = url.rsplit("%3D", 1)[1]
        conninfo = PG_URL.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            # a table of a late migration, already there: the migration fails half-way
            conn.execute(f"CREATE TABLE {schema}.api_keys (blocker integer)")
        with pytest.raises(DatabaseError, match="api_keys") as failure:
            create_home(tmp_path / "hz", "huizhou", database_url=url)
        assert "Nothing was written" in str(failure.value)
        assert not (tmp_path / "hz").exists()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            tables = conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            ).fetchall()
            assert tables == [("api_keys",)]  # the earlier revisions' tables rolled back too
            conn.execute(f"DROP TABLE {schema}.api_keys")
        config = create_home(tmp_path / "hz", "huizhou", database_url=url)
        open_node(config.home).database.dispose()


# -- paths relative to the home --------------------------------------------------------------


def test_init_writes_the_database_relative_to_the_home(tmp_path: Path) -> None:
    create_home(tmp_path / "hz", "huizhou")
    assert 'database_url = "sqlite:///data/node.db"' in (tmp_path / "hz" / "node.toml").read_text()
    inside = f"sqlite:///{tmp_path / 'hz2' / 'store' / 'node.db'}"
    create_home(tmp_path / "hz2", "huizhou", database_url=inside)
    assert (
        'database_url = "sqlite:///store/node.db"' in (tmp_path / "hz2" / "node.toml").read_text()
    )
    assert (tmp_path / "hz2" / "store" / "node.db").is_file()


@pytest.mark.parametrize(
    ("url", "resolved", "written"),
    [
        ("sqlite:///data/node.db", "sqlite:////h/data/node.db", "sqlite:///data/node.db"),
        ("sqlite:////h/data/node.db", "sqlite:////h/data/node.db", "sqlite:///data/node.db"),
        ("sqlite:////srv/node.db", "sqlite:////srv/node.db", "sqlite:////srv/node.db"),
        ("sqlite:////h/../elsewhere.db", "sqlite:////h/../elsewhere.db",
         "sqlite:////h/../elsewhere.db"),
        ("sqlite:///data/node.db?timeout=5", "sqlite:////h/data/node.db?timeout=5",
         "sqlite:///data/node.db?timeout=5"),
        ("sqlite:///:memory:", "sqlite:///:memory:", "sqlite:///:memory:"),
        ("postgresql+psycopg://u@db/hz", "postgresql+psycopg://u@db/hz",
         "postgresql+psycopg://u@db/hz"),
    ],
    ids=["relative", "absolute-in-home", "absolute-elsewhere", "dot-dot", "query", "memory",
         "postgresql"],
)  # fmt: skip
def test_the_database_path_rule(url: str, resolved: str, written: str) -> None:
    home = Path("/h")
    assert resolve_database_url(url, home) == resolved
    assert home_relative_database_url(url, home) == written


def test_a_moved_home_keeps_working(tmp_path: Path) -> None:
    first = create_home(tmp_path / "hz", "huizhou").home
    moved = tmp_path / "restored" / "huizhou-node"
    moved.parent.mkdir()
    shutil.move(first, moved)

    node = open_node(moved)
    assert node.config.database_url == f"sqlite:///{moved / 'data' / 'node.db'}"
    assert node.config.signing_key_path == moved / "keys" / "signing.key"
    [penalties] = [
        f
        for f in write_sample(node.catalog, "huizhou", 20, 5, tmp_path / "in")
        if f.stem == "admin_penalty"
    ]
    summary = import_file(
        node.database, node.catalog, penalties, "admin_penalty", reject_dir=node.config.reject_dir
    )
    assert summary.inserted > 0
    node.database.dispose()

    result = runner.invoke(
        app, ["import", str(penalties), "--theme", "admin_penalty", "--home", str(moved)]
    )
    assert result.exit_code == 0, result.output
    assert "unchanged" in result.output  # the same store, found at the home's new place
    result = runner.invoke(app, ["db", "status", "--home", str(moved)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["config", "show", "--json", "--home", str(moved)])
    assert result.exit_code == 0, result.output
    assert str(moved / "data" / "node.db") in result.output
    assert not first.exists()


def test_a_home_with_absolute_paths_keeps_working(tmp_path: Path) -> None:
    home = create_home(tmp_path / "hz", "huizhou").home
    config_file = home / "node.toml"
    absolute = f"sqlite:///{home / 'data' / 'node.db'}"  # as init wrote it before
    text = config_file.read_text().replace("sqlite:///data/node.db", absolute)
    config_file.write_text(text + f'signing_key = "{home / "keys" / "signing.key"}"\n')
    node = open_node(home)
    assert node.config.database_url == absolute
    assert node.config.signing_key_path == home / "keys" / "signing.key"
    node.database.dispose()
