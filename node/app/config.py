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
``node.toml``, then the defaults here. Relative paths are relative to the home.
A missing home, an unknown setting or a wrong value is a :class:`ConfigError`
naming the setting and where it came from.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from creditexchange.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "ENV_PREFIX",
    "MEMBER_ID_PATTERN",
    "NodeConfig",
    "NodeSettings",
    "describe_errors",
    "load_config",
]

CONFIG_FILE = "node.toml"
ENV_PREFIX = "CREDIT_NODE_"
MEMBER_ID_PATTERN = r"^[a-z][a-z0-9_-]{1,31}$"


class NodeSettings(BaseSettings):
    """Every setting a node reads. Field names are the TOML keys."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    member_id: str = Field(pattern=MEMBER_ID_PATTERN, description="this member's id")
    database_url: str = Field(
        description="SQLAlchemy URL: sqlite:///… (default) or postgresql+psycopg://…"
    )
    grpc_host: str = Field(default="0.0.0.0", description="address the gRPC server listens on")
    grpc_port: int = Field(default=7443, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0: no metrics endpoint")
    gateway_port: int = Field(default=8080, ge=1, le=65535)
    signing_key: Path = Path("keys/signing.key")
    catalog_path: Path | None = Field(
        default=None, description="the city's own catalog; the shipped one when unset"
    )
    reject_dir: Path = Path("rejects")
    policy_dir: Path = Field(
        default=Path("policy"), description="installed memorandum versions (current.json, vN.json)"
    )
    import_chunk_rows: int = Field(default=5000, ge=1, le=100_000)
    federation: str = Field(
        default="3plus2",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        description="the federation's short name; part of the ledger's origin",
    )
    subject_hmac_key: Path = Path("keys/subject-hmac.key")
    ledger_max_batch: int = Field(default=1024, ge=1, le=100_000)
    ledger_max_wait_ms: float = Field(
        default=2.0,
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
    max_batch_subjects: int = Field(default=1000, ge=1, le=100_000)
    request_window_s: float = Field(
        default=300.0, gt=0, le=3600, description="accepted clock difference of a request"
    )
    query_timeout_s: float = Field(default=10.0, gt=0, le=600)
    audit_retention_days: int = Field(
        default=1096, ge=1096, description="entry bodies are kept at least 3 years (PIPL Art. 56)"
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


class NodeConfig:
    """The settings of one node home, with its paths resolved."""

    def __init__(self, home: Path, settings: NodeSettings) -> None:
        self.home = home
        self.settings = settings

    @property
    def member_id(self) -> str:
        return self.settings.member_id

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else self.home / value

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


def load_config(home: Path) -> NodeConfig:
    """Read ``home/node.toml`` and the environment; raise ConfigError when anything is off."""
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
    try:
        settings = NodeSettings(**data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc.errors(), config_file)) from None
    return NodeConfig(home.resolve(), settings)
