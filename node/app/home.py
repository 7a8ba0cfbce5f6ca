"""Creating a node home (``credit-node init``): config, keys, migrated database, all or nothing.

Everything ``init`` creates is its user's alone, whatever the umask: the home and
its folders (``keys/``, ``data/``, ``rejects/``, ``policy/``, ``tls/``) 0700,
``node.toml``, the keys and the SQLite database 0600 from the moment each file
exists. An existing folder others can reach is refused rather than changed, and a
folder that holds a node (its ``node.toml``) is left alone: a key is never overwritten.

All or nothing. The home is built in a private staging folder and moved into place
only once every step, the database migration included, has succeeded:

* when the home does not exist, the staging folder is beside it
  (``.NAME.init-XXXXXXXX``) and becomes the home in one rename;
* when the operator made the home beforehand (say, in a place only root may write),
  the staging folder is inside it (``.init-XXXXXXXX``) and each entry is moved in,
  ``node.toml`` last, so that the home never looks like a node before it is one;
  a file already in the home is never replaced (init refuses, writing nothing), and
  a folder already there (``tls/`` with the node's certificate, say) is kept and
  filled.

When a step fails, what init created is removed: the staging folder, the home and
the folders above it that init made, a key file or a SQLite database (with its
-wal, -shm and journal files) that it created outside the home. A home the operator
made stays, with its mode and whatever it held. The error says what failed and
that nothing was written, and the next ``init`` starts afresh.

The migration runs in one transaction (``database/migrations/env.py``). On
PostgreSQL, whose DDL is transactional, a failed migration leaves no table behind,
so it never blocks a retry; a SQLite database in the home goes with the staging
folder. A database outside the home that was migrated before a later step failed
keeps its schema, and the error says so; the next ``init`` finds it current.

Paths in the home are written relative to it (``database_url =
"sqlite:///data/node.db"``), so the staged home works unchanged once moved, as does
a home an operator moves later (the rule is in
:mod:`creditexchange.node.app.config`). A process killed between two steps (a
power cut, SIGKILL) may leave its staging folder behind, named as above; delete it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from creditexchange.errors import (
    ConfigError,
    CreditExchangeError,
    DatabaseError,
    InsecurePermissions,
)
from creditexchange.node.app.config import (
    CONFIG_FILE,
    DEFAULT_DATABASE_URL,
    ENV_PREFIX,
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    NodeConfig,
    NodeSettings,
    home_relative_database_url,
    load_config,
    make_private_dir,
    mask_password,
    permission_problem,
)
from creditexchange.node.app.keys import (
    record_initial_keys,
    write_new_hmac_key,
    write_new_signing_key,
)
from creditexchange.node.database import create_database_engine, current_revision, upgrade
from creditexchange.node.database.engine import sqlite_files

__all__ = [
    "create_home",
]

_CONFIG_HEADER = (
    "# Credit Exchange Node settings; CREDIT_NODE_<NAME> environment variables override.\n"
    "# Relative paths, and the path in a sqlite:/// database_url, are relative to this folder.\n"
)

# the errors init passes on as they are, with what was (not) written added; any
# other is reported as a ConfigError
_KEPT_KINDS: tuple[type[CreditExchangeError], ...] = (
    ConfigError,
    InsecurePermissions,
    DatabaseError,
)


def create_home(
    home: Path,
    member_id: str,
    *,
    database_url: str | None = None,
    grpc_port: int = 7443,
    metrics_port: int = 9464,
    gateway_port: int = 8080,
) -> NodeConfig:
    """Write a new node home and bring its database to the current schema, all or nothing.

    Refuses a folder that already holds a node (its key is never overwritten) and an
    existing folder that other users can reach; when any step fails, nothing of the
    new home remains and the error says so.
    """
    home = home.resolve()
    config_file = home / CONFIG_FILE
    if config_file.exists():
        raise ConfigError(
            f"{home} already holds a node ({CONFIG_FILE} exists); nothing was changed"
        )
    if home.exists() and not home.is_dir():
        raise ConfigError(f"{home} is a file, not a folder: choose another --home")
    values: dict[str, Any] = {
        "member_id": member_id,
        "database_url": (
            home_relative_database_url(database_url, home) if database_url else DEFAULT_DATABASE_URL
        ),
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "gateway_port": gateway_port,
    }
    try:
        NodeSettings(**values)
    except ValidationError as exc:
        raise ConfigError(f"{_describe_init_errors(exc)}. Nothing was written.") from None
    problem = permission_problem(home, f"the folder {home}")
    if problem is not None:
        raise InsecurePermissions(
            f"a node home holds personal data and secrets, and other users can reach this "
            f"one: {problem}, then run init again. Nothing was written."
        )
    made = _Made(home)
    try:
        staging = made.staging_folder()
        _build(staging, values, made)
        made.move_into_place(staging)
        return load_config(home)
    except BaseException as exc:
        undone = made.undo()
        if isinstance(exc, CreditExchangeError | OSError):
            raise made.failure(exc, undone) from None
        raise


def _describe_init_errors(error: ValidationError) -> str:
    """What is wrong with init's arguments, each named as the operator gave it: the
    member id, a --option, or the CREDIT_NODE_… variable that overrides it."""
    problems = []
    for e in error.errors():
        name = ".".join(str(p) for p in e["loc"])
        variable = f"{ENV_PREFIX}{name.upper()}"
        if variable in os.environ:
            given = variable
        else:
            given = "the member id" if name == "member_id" else f"--{name.replace('_', '-')}"
        problems.append(f"{given} {e['input']!r}: {e['msg']}")
    return "; ".join(problems)


def _build(staging: Path, values: dict[str, Any], made: _Made) -> None:
    """Write the home's settings, folders and keys in ``staging`` and migrate its database."""
    made.step = f"write {CONFIG_FILE}"
    _write_private_text(staging / CONFIG_FILE, _CONFIG_HEADER + tomli_w.dumps(values))
    config = load_config(staging)  # the settings as every command will read them
    made.step = "create the home's folders"
    for folder in (config.reject_dir, config.policy_dir, config.tls_key_path.parent):
        if folder.is_relative_to(staging):
            make_private_dir(folder)
    made.step = "write the node's keys"
    signing_key = config.signing_key_path
    made.will_create(signing_key, signing_key.with_suffix(".pub"), config.subject_hmac_key_path)
    write_new_signing_key(signing_key)
    write_new_hmac_key(config.subject_hmac_key_path)
    made.step = "migrate the database"
    database_files = sqlite_files(config.database_url_as_set)
    made.will_create(*database_files)
    _migrate(config)
    if not database_files or not made.owns(database_files[0]):
        made.database_kept = mask_password(config.database_url_as_set)


def _migrate(config: NodeConfig) -> None:
    """Bring the home's database to the current schema and record the keys the node is
    created with (``node_keys``); its connections are closed after (a SQLite database's
    -wal and -shm files with them)."""
    url = config.database_url
    engine = create_database_engine(url)
    try:
        found = current_revision(engine)
        if found is not None:
            raise DatabaseError(
                f"the database {mask_password(url)} already holds a node's tables (schema "
                f"revision {found}): each node needs a database (or PostgreSQL schema) of its "
                "own, so that no member serves another's records; give init another "
                "--database-url"
            )
        upgrade(engine)
        record_initial_keys(engine, config)
    except SQLAlchemyError as exc:  # a migration statement refused, beyond a lost connection
        reason = getattr(exc, "orig", None) or exc
        raise DatabaseError(f"cannot migrate the database: {reason}") from None
    finally:
        engine.dispose()


class _Made:
    """What one ``init`` has created so far, and how to take it back.

    Only what did not exist before is recorded, when it is created, so taking it back
    never removes anything that was there before (the operator's folder, a file some
    other process created meanwhile).
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.home_existed = home.is_dir()
        self.step = "create the home"
        self.database_kept: str | None = None  # a database outside the home, migrated
        self.staging: Path | None = None
        self._created: list[Path] = []

    def will_create(self, *paths: Path) -> None:
        """Record ``paths``, which the next step creates, and the folders it creates for
        them (those missing now), as this init's own."""
        for path in paths:
            missing = [p for p in (path, *path.parents) if not os.path.lexists(p)]
            self._created.extend(p for p in reversed(missing) if p not in self._created)

    def owns(self, path: Path) -> bool:
        """Whether ``path`` is, or is in, something this init created."""
        return any(path.is_relative_to(created) for created in self._created)

    def staging_folder(self) -> Path:
        """A new private folder to build the home in: beside the home when it does not
        exist (its missing parents created), inside it when it does."""
        if self.home_existed:
            where, prefix = self.home, ".init-"
        else:
            where, prefix = self.home.parent, f".{self.home.name}.init-"
            self.will_create(where)
            where.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
        self._created.append(staging)
        self.staging = staging
        staging.chmod(PRIVATE_DIR_MODE)  # mkdtemp's 0700 is masked by the umask
        return staging

    def move_into_place(self, staging: Path) -> None:
        """Make the staged home the home: one rename, or, into a folder the operator
        made, one per entry with ``node.toml`` last."""
        self.step = f"move the new home into {self.home}"
        if not self.home_existed:
            os.rename(staging, self.home)  # refused if the home appeared meanwhile, not empty
            self._created.append(self.home)
            return
        moves = _moves(staging, self.home)
        config = next(m for m in moves if m[1] == self.home / CONFIG_FILE)
        for source, target in [*(m for m in moves if m is not config), config]:
            os.rename(source, target)
            self._created.append(target)
        shutil.rmtree(staging)  # what is left: empty folders the home already had

    def undo(self) -> list[str]:
        """Remove what this init created, newest first; what could not be removed."""
        problems = []
        for path in reversed(self._created):
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            except OSError as exc:
                problems.append(f"{path} ({exc.strerror})")
        self._created.clear()
        return problems

    def failure(self, exc: CreditExchangeError | OSError, undone: list[str]) -> CreditExchangeError:
        """The error to report: what failed, and that nothing was written (or what is left)."""
        if isinstance(exc, OSError):
            where = f" {exc.filename}" if exc.filename else ""
            what = f"cannot {self.step}:{where}: {exc.strerror or exc}"
        else:
            what = " ".join(str(exc).split())  # a driver's message may span lines
        if self.staging is not None:  # name what failed where it was to be
            what = what.replace(str(self.staging), str(self.home))
        if what[-1:] not in (".", "?", "!"):
            what += "."
        if undone:
            left = (
                f"Init could not remove what it had written: {', '.join(undone)}; "
                "delete that, then run init again"
            )
        else:
            state = "is as it was" if self.home_existed else "was not created"
            left = f"Nothing was written ({self.home} {state}); run init again once this is fixed"
        if self.database_kept is not None:
            left += (
                f". The database {self.database_kept} keeps the schema init migrated it to; "
                "the next init finds it current"
            )
        kind = next((k for k in _KEPT_KINDS if type(exc) is k), ConfigError)
        return kind(f"{what} {left}.")


def _moves(staged: Path, target: Path) -> list[tuple[Path, Path]]:
    """The renames that put what ``staged`` holds into ``target``: what is missing there
    moves whole, a folder both have is filled, and anything else already there is
    refused (nothing has moved yet)."""
    moves = []
    for entry in sorted(staged.iterdir()):
        there = target / entry.name
        if not os.path.lexists(there):
            moves.append((entry, there))
        elif entry.is_dir() and there.is_dir():
            moves.extend(_moves(entry, there))
        else:
            raise ConfigError(
                f"{there} already exists, and init never replaces a file in a node home: "
                "move it away or choose another --home"
            )
    return moves


def _write_private_text(path: Path, text: str) -> None:
    """A new file holding ``text``, mode 0600 from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(text)
