"""Node homes and configuration: what init writes, what a wrong setting says."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from creditexchange.errors import ConfigError, DatabaseError
from creditexchange.node.app.config import load_config
from creditexchange.node.app.home import create_home
from creditexchange.node.app.keys import load_signing_key
from creditexchange.node.database import create_database_engine, open_database


def test_init_writes_config_key_and_a_migrated_database(tmp_path: Path) -> None:
    config = create_home(tmp_path / "hz", "huizhou")
    assert config.member_id == "huizhou"
    assert (tmp_path / "hz" / "node.toml").is_file()
    key_mode = stat.S_IMODE(config.signing_key_path.stat().st_mode)
    assert key_mode == 0o600
    assert load_signing_key(config.signing_key_path).verify_key
    assert config.signing_key_path.with_suffix(".pub").read_text().strip()
    open_database(config.database_url)  # at the current schema


def test_init_never_overwrites_an_existing_node(tmp_path: Path) -> None:
    create_home(tmp_path / "hz", "huizhou")
    key = (tmp_path / "hz" / "keys" / "signing.key").read_text()
    with pytest.raises(ConfigError, match="already holds a node"):
        create_home(tmp_path / "hz", "huizhou")
    assert (tmp_path / "hz" / "keys" / "signing.key").read_text() == key


def test_environment_overrides_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_home(tmp_path / "hz", "huizhou")
    monkeypatch.setenv("CREDIT_NODE_GRPC_PORT", "9443")
    assert load_config(tmp_path / "hz").settings.grpc_port == 9443


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('grpc_port = "many"', "setting 'grpc_port'"),
        ("grpc_port = 70000", "setting 'grpc_port'"),
        ('colour = "blue"', "setting 'colour' is not known"),
        ('member_id = "Huizhou City"', "setting 'member_id'"),
        ('database_url = "mysql://x"', "must start with sqlite:/// or postgresql+psycopg://"),
    ],
)
def test_a_wrong_setting_is_refused_naming_it(tmp_path: Path, line: str, message: str) -> None:
    create_home(tmp_path / "hz", "huizhou")
    config_file = tmp_path / "hz" / "node.toml"
    key = line.split(" = ")[0]
    kept = [x for x in config_file.read_text().splitlines() if not x.startswith(f"{key} ")]
    config_file.write_text("\n".join([*kept, line]) + "\n")
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        load_config(tmp_path / "hz")


def test_a_missing_setting_is_named(tmp_path: Path) -> None:
    create_home(tmp_path / "hz", "huizhou")
    config_file = tmp_path / "hz" / "node.toml"
    kept = [x for x in config_file.read_text().splitlines() if not x.startswith("member_id")]
    config_file.write_text("\n".join(kept) + "\n")
    with pytest.raises(ConfigError, match="setting 'member_id' is missing"):
        load_config(tmp_path / "hz")


def test_a_missing_home_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="credit-node init MEMBER --home"):
        load_config(tmp_path / "nowhere")


def test_a_signing_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    config = create_home(tmp_path / "hz", "huizhou")
    config.signing_key_path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_signing_key(config.signing_key_path)


def test_a_database_behind_the_code_is_refused_with_the_upgrade_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    create_database_engine(url)
    with pytest.raises(DatabaseError, match="run 'credit-node db upgrade'"):
        open_database(url)
