"""Node homes and configuration: what init writes, what a wrong setting says, and where
the database password may come from."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from creditexchange.errors import ConfigError, DatabaseError, InsecurePermissions
from creditexchange.node.app.config import NodeSettings, load_config
from creditexchange.node.app.home import create_home
from creditexchange.node.app.keys import load_signing_key
from creditexchange.node.cli import app
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


# -- the database password, kept out of node.toml ----------------------------------------

PG = "postgresql+psycopg://credit@db.internal:5432/huizhou?sslmode=require"


def _set_database(home: Path, url: str, **more: str) -> None:
    """Point a home at ``url`` (and further settings), as an operator edits node.toml."""
    config_file = home / "node.toml"
    kept = [x for x in config_file.read_text().splitlines() if not x.startswith("database_url")]
    extra = [f"{key} = {value!r}" for key, value in more.items()]
    config_file.write_text("\n".join([*kept, f"database_url = {url!r}", *extra]) + "\n")


def _password_file(home: Path, text: str, mode: int = 0o600) -> Path:
    path = home / "db.password"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_the_database_password_is_read_from_a_file_into_the_url(tmp_path: Path) -> None:
    home = create_home(tmp_path / "hz", "huizhou").home
    _password_file(home, "s3cr@t:pw\n", mode=0o400)
    _set_database(home, PG, database_password_file="db.password")
    config = load_config(home)
    assert config.database_url == (
        "postgresql+psycopg://credit:s3cr%40t%3Apw@db.internal:5432/huizhou?sslmode=require"
    )
    assert "s3cr" not in (home / "node.toml").read_text()
    assert "s3cr" not in repr(config.settings)


def test_the_database_password_is_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = create_home(tmp_path / "hz", "huizhou").home
    _set_database(home, PG)
    monkeypatch.setenv("CREDIT_NODE_DATABASE_PASSWORD", "from-env")
    config = load_config(home)
    assert config.database_url.startswith("postgresql+psycopg://credit:from-env@db.internal")
    assert "from-env" not in repr(config.settings)


@pytest.mark.postgres
def test_a_node_opens_postgresql_with_the_password_from_its_file(
    tmp_path: Path, postgres_url: str
) -> None:
    home = create_home(tmp_path / "hz", "huizhou", database_url=postgres_url).home
    _password_file(home, "any-password-trust-auth-accepts\n")
    _set_database(home, postgres_url, database_password_file="db.password")
    config = load_config(home)
    assert ":any-password-trust-auth-accepts@" in config.database_url
    open_database(config.database_url).dispose()  # the URL's options (search_path) kept


@pytest.mark.parametrize(
    ("url", "settings", "environment", "file", "message"),
    [
        (PG, {"database_password_file": "db.password"}, "from-env", "pw",
         "the database password is given twice"),
        ("postgresql+psycopg://credit:inline@db.internal/huizhou",
         {"database_password_file": "db.password"}, None, "pw",
         "database_url holds a password and database_password_file"),
        (PG, {"database_password_file": "missing.password"}, None, None,
         "setting 'database_password_file': no file at"),
        (PG, {"database_password_file": "db.password"}, None, "\n",
         "db.password is empty"),
        ("postgresql+psycopg://db.internal/huizhou", {}, "from-env", None,
         "database_url names no user"),
        ("sqlite:///{home}/data/node.db", {}, "from-env", None,
         "a SQLite database, which has none"),
        (PG, {"database_password": "in-the-file"}, None, None,
         "read from CREDIT_NODE_DATABASE_PASSWORD only"),
        (PG, {}, "", None, "CREDIT_NODE_DATABASE_PASSWORD is set but empty"),
    ],
    ids=["file-and-env", "url-and-file", "missing-file", "empty-file", "no-user", "sqlite",
         "password-in-node-toml", "empty-env"],
)  # fmt: skip
def test_a_database_password_that_does_not_fit_is_refused_saying_why(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    settings: dict[str, str],
    environment: str | None,
    file: str | None,
    message: str,
) -> None:
    home = create_home(tmp_path / "hz", "huizhou").home
    if file is not None:
        _password_file(home, file)
    _set_database(home, url.format(home=home), **settings)
    if environment is not None:
        monkeypatch.setenv("CREDIT_NODE_DATABASE_PASSWORD", environment)
    with pytest.raises(ConfigError, match=message):
        load_config(home)


def test_a_password_file_others_can_read_is_refused_with_the_chmod(tmp_path: Path) -> None:
    home = create_home(tmp_path / "hz", "huizhou").home
    password = _password_file(home, "pw\n", mode=0o644)
    _set_database(home, PG, database_password_file="db.password")
    with pytest.raises(
        InsecurePermissions,
        match=f"readable by group and others \\(mode 0644\\): run chmod 600 {password}",
    ):
        load_config(home)


# -- config show: every setting, its value, default and source -----------------------------


def _config_show(home: Path) -> dict[str, dict[str, object]]:
    result = CliRunner().invoke(app, ["config", "show", "--json", "--home", str(home)])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["home"] == str(home)
    return {s["name"]: s for s in shown["settings"]}


def test_config_show_tells_each_settings_value_default_and_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = create_home(tmp_path / "hz", "huizhou", metrics_port=0).home
    monkeypatch.setenv("CREDIT_NODE_GRPC_PORT", "9443")
    shown = _config_show(home)
    assert set(shown) == set(NodeSettings.model_fields)  # every setting, none left out
    assert shown["grpc_port"] == {
        **shown["grpc_port"],
        "value": 9443, "written": "9443", "default": 7443,
        "source": "environment variable CREDIT_NODE_GRPC_PORT",
    }  # fmt: skip
    assert shown["metrics_port"]["source"] == "node.toml"
    assert (shown["metrics_port"]["value"], shown["metrics_port"]["default"]) == (0, 9464)
    assert shown["grpc_host"] == {**shown["grpc_host"], "source": "default", "written": None}
    assert shown["member_id"]["required"] is True
    # paths: resolved against the home, with the form written or defaulted
    assert shown["database_url"]["value"] == f"sqlite:///{home / 'data' / 'node.db'}"
    assert shown["database_url"]["written"] == "sqlite:///data/node.db"
    assert shown["signing_key"]["value"] == str(home / "keys" / "signing.key")
    assert shown["signing_key"]["default"] == "keys/signing.key"
    assert shown["tls_ca"]["value"] == str(home / "tls" / "ca.crt")

    result = CliRunner().invoke(app, ["config", "show", "--home", str(home)])
    assert result.exit_code == 0, result.output
    [grpc_port] = [line for line in result.stdout.splitlines() if "grpc_port" in line]
    assert "9443" in grpc_port and "CREDIT_NODE_GRPC_PORT" in grpc_port and "7443" in grpc_port


@pytest.mark.parametrize(
    ("url", "settings", "environment"),
    [
        ("postgresql+psycopg://credit:hunter2-inline@db.internal/huizhou", {}, None),
        (PG, {"database_password_file": "db.password"}, None),
        (PG, {}, "hunter2-from-env"),
    ],
    ids=["in-the-url", "password-file", "environment"],
)
def test_config_show_never_prints_a_password(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    settings: dict[str, str],
    environment: str | None,
) -> None:
    home = create_home(tmp_path / "hz", "huizhou").home
    password_file = _password_file(home, "hunter2-in-the-file\n")
    _set_database(home, url, **settings)
    if environment is not None:
        monkeypatch.setenv("CREDIT_NODE_DATABASE_PASSWORD", environment)
    for argv in (["config", "show"], ["config", "show", "--json"]):
        result = CliRunner().invoke(app, [*argv, "--home", str(home)])
        assert result.exit_code == 0, result.output
        assert "hunter2" not in result.output
    shown = _config_show(home)
    if "inline" in url:
        assert (
            shown["database_url"]["value"]
            == shown["database_url"]["written"]
            == ("postgresql+psycopg://credit:***@db.internal/huizhou")
        )
        assert shown["database_password"]["value"] is None
    elif settings:
        assert shown["database_password"]["value"] == "***"
        assert shown["database_password"]["source"] == f"password file {password_file}"
    else:
        assert shown["database_password"] == {
            **shown["database_password"],
            "value": "***", "written": "***",
            "source": "environment variable CREDIT_NODE_DATABASE_PASSWORD",
        }  # fmt: skip
