"""Creating a node home (``credit-node init``): config, signing key, migrated database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from creditexchange.errors import ConfigError
from creditexchange.node.app.config import (
    CONFIG_FILE,
    NodeConfig,
    NodeSettings,
    describe_errors,
    load_config,
)
from creditexchange.node.app.keys import write_new_hmac_key, write_new_signing_key
from creditexchange.node.database import create_database_engine, upgrade

__all__ = [
    "create_home",
]


def create_home(
    home: Path,
    member_id: str,
    *,
    database_url: str | None = None,
    grpc_port: int = 7443,
    metrics_port: int = 9464,
    gateway_port: int = 8080,
) -> NodeConfig:
    """Write a new node home and bring its database to the current schema.

    Refuses a folder that already holds a node (its key is never overwritten).
    """
    home = home.resolve()
    config_file = home / CONFIG_FILE
    if config_file.exists():
        raise ConfigError(
            f"{home} already holds a node ({CONFIG_FILE} exists); nothing was changed"
        )
    values: dict[str, Any] = {
        "member_id": member_id,
        "database_url": database_url or f"sqlite:///{home / 'data' / 'node.db'}",
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "gateway_port": gateway_port,
    }
    try:
        NodeSettings(**values)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc.errors(), config_file)) from None
    home.mkdir(parents=True, exist_ok=True)
    config_file.write_text(
        "# Credit Exchange Node settings; CREDIT_NODE_<NAME> environment variables override.\n"
        + tomli_w.dumps(values)
    )
    config = load_config(home)
    write_new_signing_key(config.signing_key_path)
    write_new_hmac_key(config.subject_hmac_key_path)
    upgrade(create_database_engine(config.database_url))
    return config
