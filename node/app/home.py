"""Creating a node home (``credit-node init``): config, signing key, migrated database.

Everything ``init`` creates is its user's alone, whatever the umask: the home and
its folders (``keys/``, ``data/``, ``rejects/``, ``policy/``, ``tls/``) 0700,
``node.toml``, the keys and the SQLite database 0600 from the moment each file
exists. An existing folder others can reach is refused rather than changed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tomli_w
from pydantic import ValidationError

from creditexchange.errors import ConfigError, InsecurePermissions
from creditexchange.node.app.config import (
    CONFIG_FILE,
    PRIVATE_FILE_MODE,
    NodeConfig,
    NodeSettings,
    describe_errors,
    load_config,
    make_private_dir,
    permission_problem,
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

    Refuses a folder that already holds a node (its key is never overwritten), and
    an existing folder that other users can reach (nothing is written then).
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
    problem = permission_problem(home, f"the folder {home}")
    if problem is not None:
        raise InsecurePermissions(
            f"a node home holds personal data and secrets, and other users can reach this "
            f"one: {problem}, then run init again. Nothing was written."
        )
    make_private_dir(home)
    _write_private_text(
        config_file,
        "# Credit Exchange Node settings; CREDIT_NODE_<NAME> environment variables override.\n"
        + tomli_w.dumps(values),
    )
    config = load_config(home)
    for folder in (config.reject_dir, config.policy_dir, config.tls_key_path.parent):
        if folder.is_relative_to(home):
            make_private_dir(folder)
    write_new_signing_key(config.signing_key_path)
    write_new_hmac_key(config.subject_hmac_key_path)
    upgrade(create_database_engine(config.database_url))
    return config


def _write_private_text(path: Path, text: str) -> None:
    """A new file holding ``text``, mode 0600 from the moment it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(text)
