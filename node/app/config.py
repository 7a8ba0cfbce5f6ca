"""A node's configuration: one TOML file in the node home, overridable by environment.

A node home is a folder::

    node.toml          the settings below (written by ``credit-node init``)
    keys/signing.key   the node's Ed25519 signing seed, mode 0600
    keys/signing.pub   its public key (hex), to put in the memorandum
    keys/subject-hmac.key  the secret keying subject HMACs in the audit ledger, mode 0600
    data/node.db       the SQLite database (when database_url is left at its default)
    rejects/           reject reports of imports
    policy/            the installed memorandum: current.json and every accepted vN.json

Precedence, highest first: ``CREDIT_NODE_<SETTING>`` environment variables, then
``node.toml``, then the defaults here. A missing home, an unknown setting or a
wrong value is a :class:`ConfigError` naming the setting and where it came from.
:func:`describe_settings` tells each setting's value, default and source (``credit-node
config show``), secrets masked.

Paths are relative to the home, so that a home moved to another folder or restored
from a backup elsewhere keeps working. The rule, for every setting that names a file
or folder (``signing_key``, ``subject_hmac_key``, ``tls_*``, ``gateway_tls_*``,
``database_password_file``, every ``*_dir`` and ``*_path``) and for a SQLite
``database_url``, whether the value comes from ``node.toml``, the environment or a
default:

* a relative path names a file in the home, never in the working folder:
  ``signing_key = "keys/signing.key"`` is ``HOME/keys/signing.key``;
* ``database_url = "sqlite:///data/node.db"`` (three slashes, then a relative path)
  is the database ``HOME/data/node.db``; ``sqlite:////srv/node.db`` (a fourth slash
  begins an absolute path) is ``/srv/node.db``;
* an absolute path stays as it is, so a home written with absolute paths keeps
  working wherever those paths still lead.

``credit-node init`` writes what is in the home in the relative form
(:func:`home_relative_database_url`); :class:`NodeConfig` resolves it each time the
home is opened, against the folder it is opened from (``--home`` or
``CREDIT_NODE_HOME``, symbolic links resolved).

The home holds personal data and secrets, so it is private to the node's user:
:func:`load_config` — the way every command opens a home — refuses one whose
folder, ``node.toml``, key files, SQLite database (with its -wal, -shm and
journal files), password file, or the folders between the home and them,
another user could read or write, naming each with its mode and the ``chmod``
that fixes it (:class:`InsecurePermissions`). Folders must be 0700, files 0600
(or stricter).

The database password need not be in ``node.toml``: ``database_password_file``
names a file (0600 or 0400) holding it, or ``CREDIT_NODE_DATABASE_PASSWORD``
gives it; either is put into ``database_url``, which must then name a user and
no password of its own.
"""

from __future__ import annotations

import re
import shlex
import stat
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy import URL, make_url
from sqlalchemy.exc import ArgumentError

from creditexchange.errors import ConfigError, InsecurePermissions
from creditexchange.node.database.engine import sqlite_files
from creditexchange.node.ledger.log import MIN_RETENTION_DAYS
from creditexchange.node.records.objections import ANSWER_WORKING_DAYS

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_DATABASE_URL",
    "ENV_PREFIX",
    "MEMBER_ID_PATTERN",
    "PASSWORD_ENV",
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "SECRET_SHOWN",
    "NodeConfig",
    "NodeSettings",
    "ShownSetting",
    "WrittenSetting",
    "describe_errors",
    "describe_settings",
    "home_relative_database_url",
    "load_config",
    "make_private_dir",
    "mask_password",
    "permission_problem",
    "require_private_home",
    "resolve_database_url",
]

CONFIG_FILE = "node.toml"
ENV_PREFIX = "CREDIT_NODE_"
PASSWORD_ENV = f"{ENV_PREFIX}DATABASE_PASSWORD"
MEMBER_ID_PATTERN = r"^[a-z][a-z0-9_-]{1,31}$"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
DEFAULT_DATABASE_URL = "sqlite:///data/node.db"
"""What init writes: the SQLite database ``data/node.db`` in the home."""
SECRET_SHOWN = "***"


class NodeSettings(BaseSettings):
    """Every setting a node reads. Field names are the TOML keys."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    member_id: str = Field(pattern=MEMBER_ID_PATTERN, description="this member's id")
    database_url: str = Field(
        description="SQLAlchemy URL: sqlite:///… (a relative path is in the home) or "
        "postgresql+psycopg://…"
    )
    database_password_file: Path | None = Field(
        default=None,
        description="a file (mode 0600 or 0400) holding the password to put into database_url",
    )
    database_password: SecretStr | None = Field(
        default=None,
        description=f"the password to put into database_url; from {PASSWORD_ENV} only",
    )
    grpc_host: str = Field(default="0.0.0.0", description="address the gRPC server listens on")
    grpc_port: int = Field(default=7443, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0: no metrics endpoint")
    gateway_host: str = Field(
        default="127.0.0.1", description="address the REST gateway listens on"
    )
    gateway_port: int = Field(
        default=8080, ge=0, le=65535, description="0: 'serve' starts no gateway beside the node"
    )
    gateway_tls_cert: Path | None = Field(
        default=None, description="the gateway's server certificate (PEM), from the operator"
    )
    gateway_tls_key: Path | None = Field(default=None, description="its private key (0600)")
    gateway_max_body_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    gateway_deadline_s: float = Field(
        default=5.0, gt=0, le=120, description="how long a report, check or screening waits"
    )
    publish_interval_s: float = Field(
        default=5.0,
        ge=0,
        le=86_400,
        description="how often a serving node appends its published themes' changes to "
        "their feeds (0: never)",
    )
    sync_feeds: bool = Field(
        default=True,
        description="a serving node keeps its copies of the feeds the memorandum lets it "
        "sync up to date (false: only 'credit-node sync run' does)",
    )
    measures_path: Path | None = Field(
        default=None, description="this city's measures catalog; default: the one shipped"
    )
    signing_key: Path = Path("keys/signing.key")
    catalog_path: Path | None = Field(
        default=None, description="the city's own catalog; the shipped one when unset"
    )
    reject_dir: Path = Path("rejects")
    policy_dir: Path = Field(
        default=Path("policy"), description="installed memorandum versions (current.json, vN.json)"
    )
    import_chunk_rows: int = Field(default=5000, ge=1, le=100_000)
    objection_answer_working_days: int = Field(
        default=ANSWER_WORKING_DAYS,
        ge=1,
        le=60,
        description="working days from receiving an objection to answering it (2 to accept, "
        "2 to check, 10 at the source department)",
    )
    workdays_path: Path | None = Field(
        default=None,
        description="a YAML file of holidays and working weekends beyond the built-in "
        "2025-2026 schedules (creditexchange.workdays)",
    )
    federation: str = Field(
        default="3plus2",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="the federation's short name; part of the ledger's origin",
    )
    subject_hmac_key: Path = Path("keys/subject-hmac.key")
    ledger_max_batch: int = Field(default=1024, ge=1, le=100_000)
    ledger_max_wait_ms: float = Field(
        default=10.0,
        ge=0,
        le=1000,
        description="under load, how long a ledger batch waits to fill (an idle node never waits)",
    )
    tls_cert: Path = Field(default=Path("tls/node.crt"), description="this node's certificate")
    tls_key: Path = Field(default=Path("tls/node.key"), description="its private key (0600)")
    tls_ca: Path = Field(default=Path("tls/ca.crt"), description="the federation CA certificate")
    tls_crl: Path = Field(
        default=Path("tls/crl.pem"), description="the CA's signed revocation list (required)"
    )
    peers: dict[str, str] = Field(
        default_factory=dict,
        description="member id -> host:port, overriding the memorandum's endpoints",
    )
    max_concurrent_calls: int = Field(default=256, ge=1, le=100_000)
    max_message_bytes: int = Field(default=1 << 20, ge=1024, le=64 << 20)
    # at most the protocol's 1,000: an answered batch's audit entry (one HMAC per subject)
    # must stay within the ledger's 64 KiB bound
    max_batch_subjects: int = Field(default=1000, ge=1, le=1000)
    request_window_s: float = Field(
        default=300.0, gt=0, le=3600, description="accepted clock difference of a request"
    )
    query_timeout_s: float = Field(default=10.0, gt=0, le=600)
    audit_retention_days: int = Field(
        default=MIN_RETENTION_DAYS,
        ge=MIN_RETENTION_DAYS,
        description="entry bodies are kept at least 3 years (PIPL Art. 56)",
    )
    witness_interval_s: float = Field(
        default=60.0,
        ge=0,
        le=86_400,
        description="seconds between the serving node's witness rounds over its peers' "
        "logs; 0: it does not witness",
    )

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql+psycopg://")):
            raise ValueError(
                "must start with sqlite:/// or postgresql+psycopg:// "
                f"(found {url.split(':', 1)[0]!r})"
            )
        return url

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init arguments; the environment overrides it.
        return (env_settings, init_settings)


@dataclass(frozen=True)
class WrittenSetting:
    """A setting given by ``node.toml`` or an environment variable: where, and the value
    as written there (a secret masked)."""

    source: str
    value: Any


class NodeConfig:
    """The settings of one node home, with its paths resolved against the home.

    ``written`` holds the settings that ``node.toml`` or the environment gave (those
    missing took their default), as :func:`load_config` found them.
    """

    def __init__(
        self,
        home: Path,
        settings: NodeSettings,
        *,
        written: Mapping[str, WrittenSetting] | None = None,
    ) -> None:
        self.home = home
        self.settings = settings
        self.written: Mapping[str, WrittenSetting] = written or {}

    @property
    def member_id(self) -> str:
        return self.settings.member_id

    @cached_property
    def database_url(self) -> str:
        """``database_url`` with the password of ``database_password_file`` or
        ``CREDIT_NODE_DATABASE_PASSWORD`` put in; never print it."""
        return _database_url_with_password(self)

    @property
    def database_url_as_set(self) -> str:
        """``database_url`` as set, a relative SQLite path resolved against the home; no
        password put in (one written in the URL itself stays: mask it to print it)."""
        return resolve_database_url(self.settings.database_url, self.home)

    def path(self, value: Path) -> Path:
        """A path setting's file: a relative path is in the home."""
        return value if value.is_absolute() else self.home / value

    @property
    def database_password_file(self) -> Path | None:
        file = self.settings.database_password_file
        return None if file is None else self.path(file)

    @property
    def signing_key_path(self) -> Path:
        return self.path(self.settings.signing_key)

    @property
    def subject_hmac_key_path(self) -> Path:
        return self.path(self.settings.subject_hmac_key)

    @property
    def catalog_path(self) -> Path | None:
        return None if self.settings.catalog_path is None else self.path(self.settings.catalog_path)

    @property
    def policy_dir(self) -> Path:
        return self.path(self.settings.policy_dir)

    @property
    def reject_dir(self) -> Path:
        return self.path(self.settings.reject_dir)

    @property
    def workdays_path(self) -> Path | None:
        path = self.settings.workdays_path
        return None if path is None else self.path(path)

    @property
    def tls_cert_path(self) -> Path:
        return self.path(self.settings.tls_cert)

    @property
    def tls_key_path(self) -> Path:
        return self.path(self.settings.tls_key)

    @property
    def tls_ca_path(self) -> Path:
        return self.path(self.settings.tls_ca)

    @property
    def tls_crl_path(self) -> Path:
        return self.path(self.settings.tls_crl)


def _sqlite_url(url: str) -> URL | None:
    """``url`` parsed when it names a SQLite database file by its path; else None."""
    if not url.startswith("sqlite:///"):
        return None
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.database in (None, "", ":memory:") or parsed.query.get("uri"):
        return None
    return parsed


def resolve_database_url(url: str, home: Path) -> str:
    """``url`` with a relative SQLite database path made absolute against ``home``
    (``sqlite:///data/node.db`` is ``HOME/data/node.db``); any other URL as it is."""
    parsed = _sqlite_url(url)
    if parsed is None or parsed.database is None or Path(parsed.database).is_absolute():
        return url
    return parsed.set(database=str(home / parsed.database)).render_as_string(hide_password=False)


def home_relative_database_url(url: str, home: Path) -> str:
    """``url`` with a SQLite database inside ``home`` named relative to it, the form
    that survives moving the home; any other URL as it is."""
    parsed = _sqlite_url(url)
    if parsed is None or parsed.database is None:
        return url
    database = Path(parsed.database)
    if not database.is_absolute() or ".." in database.parts or not database.is_relative_to(home):
        return url
    relative = database.relative_to(home).as_posix()
    return parsed.set(database=relative).render_as_string(hide_password=False)


# userinfo of a URL too broken to parse: everything from the first ':' after '://'
# up to the last '@' counts as the password
_USERINFO_PASSWORD = re.compile(r"(://[^/@:]*:).*@")


def mask_password(url: str) -> str:
    """``url`` with its password, if it holds one, shown as ``***``."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return _USERINFO_PASSWORD.sub(rf"\g<1>{SECRET_SHOWN}@", url)
    return parsed.render_as_string(hide_password=True) if parsed.password else url


def describe_errors(errors: list[Any], config_file: Path) -> str:
    lines = []
    for e in errors:
        setting = ".".join(str(p) for p in e["loc"]) or "(file)"
        if e["type"] == "extra_forbidden":
            lines.append(f"setting {setting!r} is not known; check its spelling in {config_file}")
        elif e["type"] == "missing":
            lines.append(
                f"setting {setting!r} is missing: set it in {config_file} or "
                f"{ENV_PREFIX}{setting.upper()}"
            )
        else:
            lines.append(
                f"setting {setting!r} (from {config_file} or {ENV_PREFIX}{setting.upper()}): "
                f"{e['msg']}"
            )
    return "; ".join(lines)


def _access(bits: int, directory: bool) -> str:
    """What one class of users (group, others) may do, from its three mode bits."""
    verbs = [verb for verb, bit in (("readable", 4), ("writable", 2)) if bits & bit]
    return " and ".join(verbs) or ("searchable" if directory else "executable")


def permission_problem(path: Path, shown: str | None = None) -> str | None:
    """Why users other than the owner can reach ``path``, with the ``chmod`` that stops
    it; None when they cannot, or when ``path`` does not exist.

    Folders must be 0700 and files 0600, or stricter: no bit for group or others.
    """
    shown = shown or str(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{shown} cannot be checked ({exc.strerror}); make it its owner's alone"
    mode = stat.S_IMODE(status.st_mode)
    if not mode & 0o077:
        return None
    directory = stat.S_ISDIR(status.st_mode)
    group = _access(mode >> 3, directory) if mode & 0o070 else None
    others = _access(mode, directory) if mode & 0o007 else None
    if group is not None and group == others:
        who = f"{group} by group and others"
    else:
        who = ", ".join(f"{a} by {w}" for a, w in ((group, "group"), (others, "others")) if a)
    fix = PRIVATE_DIR_MODE if directory else PRIVATE_FILE_MODE
    return f"{shown} is {who} (mode {mode:04o}): run chmod {fix:o} {shlex.quote(str(path))}"


def make_private_dir(path: Path) -> None:
    """Create the folder ``path`` with mode 0700, whatever the umask; an existing one is
    left as it is (the node refuses to run if others can reach it)."""
    if path.is_dir():
        return
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR_MODE)  # mkdir's mode is masked by the umask


def _private_paths(config: NodeConfig) -> list[Path]:
    """The home, the files holding personal data or secrets, and every folder between
    the home and those of them inside it (``data/``, ``keys/``)."""
    home = config.home
    files = [
        home / CONFIG_FILE,
        config.signing_key_path,
        config.subject_hmac_key_path,
        *sqlite_files(config.database_url_as_set),
    ]
    if config.database_password_file is not None:
        files.append(config.database_password_file)
    if config.settings.gateway_tls_key is not None:
        files.append(config.path(config.settings.gateway_tls_key))
    folders: dict[Path, None] = {home: None}  # ordered, without repeats
    for file in files:
        if file.is_relative_to(home) and ".." not in file.parts:
            folders.update((f, None) for f in reversed(file.parents) if f.is_relative_to(home))
    return [*folders, *files]


def require_private_home(config: NodeConfig) -> None:
    """Refuse the home when another user could read or write it or a private file in it,
    as ssh refuses a private key others can read; the message lists every one with its
    ``chmod``."""
    problems = []
    for path in _private_paths(config):
        if path == config.home:
            shown = f"the home {path}"
        elif path.is_relative_to(config.home):
            shown = str(path.relative_to(config.home))
        else:
            shown = str(path)
        problem = permission_problem(path, shown)
        if problem is not None and problem not in problems:
            problems.append(problem)
    if problems:
        raise InsecurePermissions(
            f"the node home {config.home} holds personal data and secrets, and other users "
            f"can reach them: {'; '.join(problems)}. The node runs only when they are its "
            "owner's alone."
        )


def _read_password_file(path: Path) -> str:
    setting = "setting 'database_password_file'"
    problem = permission_problem(path)
    if problem is not None:
        raise InsecurePermissions(f"{setting}: {problem}")
    try:
        password = path.read_text("utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(
            f"{setting}: no file at {path}; write the database password there (mode 600) "
            "or remove the setting"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"{setting}: cannot read {path}: {reason}") from None
    if not password:
        raise ConfigError(f"{setting}: {path} is empty; write the database password there")
    return password


def _database_url_with_password(config: NodeConfig) -> str:
    url = config.database_url_as_set
    file, secret = config.database_password_file, config.settings.database_password
    if file is not None and secret is not None:
        raise ConfigError(
            f"the database password is given twice, by database_password_file ({file}) and by "
            f"{PASSWORD_ENV}; keep one of them"
        )
    read: Callable[[], str]
    if file is not None:
        source, read = f"database_password_file ({file})", lambda: _read_password_file(file)
    elif secret is not None:
        if not secret.get_secret_value():
            raise ConfigError(f"{PASSWORD_ENV} is set but empty; give the password or unset it")
        source, read = PASSWORD_ENV, secret.get_secret_value
    else:
        return url
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("setting 'database_url' is not a database URL") from None
    if parsed.get_backend_name() == "sqlite":
        raise ConfigError(
            f"{source} gives a database password, but database_url is a SQLite database, "
            "which has none; remove the password setting"
        )
    if parsed.password:
        raise ConfigError(
            f"database_url holds a password and {source} gives another; remove the one in "
            "database_url (which keeps the password out of node.toml)"
        )
    if not parsed.username:
        raise ConfigError(
            f"{source} gives a password, but database_url names no user to use it with: "
            "write it as postgresql+psycopg://USER@HOST/DATABASE"
        )
    return parsed.set(password=read()).render_as_string(hide_password=False)


def load_config(home: Path) -> NodeConfig:
    """Read ``home/node.toml`` and the environment; raise ConfigError when anything is off,
    InsecurePermissions when other users can reach the home's private files."""
    config_file = home / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(
            f"no node home at {home} (no {CONFIG_FILE} there): create one with "
            f"'credit-node init MEMBER --home {home}', or point --home / CREDIT_NODE_HOME "
            "at an existing one"
        )
    try:
        data = tomllib.loads(config_file.read_text("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_file} is not valid TOML: {exc}") from None
    if "database_password" in data:
        raise ConfigError(
            f"{config_file} sets database_password, which is read from {PASSWORD_ENV} only; "
            "remove it from the file and set that variable, or name a file holding it with "
            "database_password_file"
        )
    try:
        settings = NodeSettings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc.errors(), config_file)) from None
    config = NodeConfig(home.resolve(), settings, written=_written_settings(data))
    require_private_home(config)
    _ = config.database_url  # a password setting that does not fit is refused now
    return config


# -- what config show tells ---------------------------------------------------------------


def _is_secret(field: FieldInfo) -> bool:
    return field.annotation is SecretStr or SecretStr in typing.get_args(field.annotation)


def _shown(field: FieldInfo, value: Any) -> Any:
    """``value`` fit to print: a secret as ``***``, a URL with its password masked."""
    if value is None:
        return None
    if _is_secret(field):
        return SECRET_SHOWN
    if isinstance(value, str) and "://" in value:
        return mask_password(value)
    return value


def _written_settings(file_values: Mapping[str, Any]) -> dict[str, WrittenSetting]:
    """Which settings the environment and ``node.toml`` give, the environment first,
    as the settings themselves take them."""
    fields = NodeSettings.model_fields
    written = {
        name: WrittenSetting(f"environment variable {ENV_PREFIX}{name.upper()}", value)
        for name, value in EnvSettingsSource(NodeSettings)().items()
        if name in fields
    }
    for name, value in file_values.items():
        if name in fields:
            written.setdefault(name, WrittenSetting(CONFIG_FILE, value))
    return {
        name: WrittenSetting(w.source, _shown(fields[name], w.value)) for name, w in written.items()
    }


@dataclass(frozen=True)
class ShownSetting:
    """One setting as ``credit-node config show`` prints it.

    ``value`` is the one in effect: a path resolved against the home, a secret
    ``***``, a password inside a URL ``***``. ``written`` is the value as ``node.toml``
    or the environment gives it (None for a default); ``source`` says which: ``node.toml``,
    ``environment variable CREDIT_NODE_…``, ``password file …`` or ``default``.
    """

    name: str
    value: Any
    written: Any
    source: str
    default: Any
    required: bool
    description: str

    def as_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return str(value) if isinstance(value, Path) else value

        return {
            "name": self.name,
            "value": plain(self.value),
            "written": plain(self.written),
            "source": self.source,
            "default": plain(self.default),
            "required": self.required,
            "description": self.description,
        }


def describe_settings(config: NodeConfig) -> list[ShownSetting]:
    """Every setting of ``config``: its value, as written, its source and its default.

    Nothing secret is in it: a password (in ``database_url``, from
    ``CREDIT_NODE_DATABASE_PASSWORD``) is ``***``, and the password file is named, never
    read.
    """
    shown = []
    for name, field in NodeSettings.model_fields.items():
        value = getattr(config.settings, name)
        written = config.written.get(name)
        source = "default" if written is None else written.source
        if name == "database_url":
            value = config.database_url_as_set
        elif isinstance(value, Path):
            value = config.path(value)
        if name == "database_password" and config.database_password_file is not None:
            value = SecretStr(SECRET_SHOWN)  # the file is named, never read here
            source = f"password file {config.database_password_file}"
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        shown.append(
            ShownSetting(
                name=name,
                value=_shown(field, value),
                written=None if written is None else written.value,
                source=source,
                default=_shown(field, default),
                required=required,
                description=field.description or "",
            )
        )
    return shown
