"""Provision the six node homes of compose.yaml, once, before ``up``.

Run by the compose service ``provision`` (``docker compose run --rm provision``), in the
node's image, with the members' home volumes mounted at ``ROOT/<member>`` and the
federation CA's volume at ``ROOT/ca``. It does what the six credit centers would do
between them (``creditexchange.devtools.provision``: a CA and a certificate per node, a
home per member, the "3+2" memorandum signed by all six and installed on each, sample
department data imported), with what compose adds:

* each member's store is a PostgreSQL database of its own (``credit_<member>``), owned
  by a login role of its own with a random password; no other role may connect to it.
  The password is in the member's home only (``keys/database.password``, mode 0600,
  named by ``database_password_file``), never in node.toml or the compose file;
* the nodes listen on every interface of their containers (gRPC 7443, metrics 9464)
  and reach each other by their service names (``peers``);
* run as root, the script hands the homes to the node's user (``--owner``) and
  becomes that user before writing anything in them.

It refuses, before changing anything, when a home already holds a node or a member's
database or role exists: provisioning happens once. Start again with
``docker compose down --volumes``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from creditexchange.devtools.provision import MEMBERS, provision, set_settings
from creditexchange.node.app.config import CONFIG_FILE

GRPC_PORT = 7443
METRICS_PORT = 9464
PEER_ADDRESS = "{member}:7443"
"""How a node reaches a peer: the compose service named after the member."""
PASSWORD_FILE = "keys/database.password"
NODE_OWNER = "10001:10001"
"""The image's credit-node user and group (deploy/container/Containerfile)."""
WITNESS_INTERVAL_S = 60.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path("/federation"), help="ROOT above")
    parser.add_argument("--database-host", default="postgres")
    parser.add_argument("--database-port", type=int, default=5432)
    parser.add_argument(
        "--admin-user",
        default="postgres",
        help="a PostgreSQL role that may create roles and databases; its password is read "
        "from the environment variable POSTGRES_PASSWORD (none: no password)",
    )
    parser.add_argument(
        "--database-prefix",
        default="credit_",
        help="each member's database and role is named PREFIX<member>",
    )
    parser.add_argument("--subjects", type=int, default=200, help="sample subjects per member")
    parser.add_argument("--owner", default=NODE_OWNER, help="UID:GID the homes are handed to")
    args = parser.parse_args(argv)
    if args.subjects < 1:
        parser.error("--subjects must be at least 1")

    homes = [args.root / member for member in MEMBERS]
    taken = [str(home) for home in homes if (home / CONFIG_FILE).exists()]
    if taken:
        return refuse(f"already provisioned: {', '.join(taken)} hold a node")
    databases = {member: f"{args.database_prefix}{member}" for member in MEMBERS}
    admin = psycopg.connect(
        host=args.database_host,
        port=args.database_port,
        user=args.admin_user,
        password=os.environ.get("POSTGRES_PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )
    with admin:
        existing = existing_names(admin, list(databases.values()))
        if existing:
            return refuse(f"PostgreSQL already has {', '.join(existing)}")
        passwords = {member: create_database(admin, name) for member, name in databases.items()}

    uid, gid = (int(part) for part in args.owner.split(":"))
    become_owner(uid, gid, [args.root / "ca", *homes])
    urls = {
        member: f"postgresql+psycopg://{name}@{args.database_host}:{args.database_port}/{name}"
        for member, name in databases.items()
    }
    with password_file_for_libpq(args, databases, passwords):
        nodes = provision(
            args.root,
            members=MEMBERS,
            ports=[GRPC_PORT] * len(MEMBERS),
            database_urls=urls,
            subjects=args.subjects,
            witness_interval_s=WITNESS_INTERVAL_S,
            feeds=True,
            say=print,
        )
    peers = {member: PEER_ADDRESS.format(member=member) for member in MEMBERS}
    for member, node in nodes.items():
        password = node.home / PASSWORD_FILE
        password.touch(mode=0o600)
        password.write_text(passwords[member] + "\n", encoding="utf-8")
        set_settings(
            node.home,
            database_password_file=PASSWORD_FILE,
            grpc_host="0.0.0.0",
            grpc_port=GRPC_PORT,
            metrics_host="0.0.0.0",
            metrics_port=METRICS_PORT,
            peers=peers,
        )
    print(
        f"the six homes are ready; the federation CA (its private key too) is in {args.root}/ca:"
        " copy it somewhere safe and offline, then: docker compose up -d"
    )
    return 0


def refuse(reason: str) -> int:
    print(
        f"provision: {reason}; nothing was changed. Provisioning happens once: to start "
        "again, remove the federation with 'docker compose down --volumes'",
        file=sys.stderr,
    )
    return 2


def existing_names(admin: psycopg.Connection[TupleRow], names: list[str]) -> list[str]:
    """Which of ``names`` PostgreSQL already has, as a role or as a database."""
    rows = admin.execute(
        "SELECT 'role ' || rolname FROM pg_roles WHERE rolname = ANY(%(n)s) "
        "UNION ALL SELECT 'database ' || datname FROM pg_database WHERE datname = ANY(%(n)s)",
        {"n": names},
    ).fetchall()
    return sorted(row[0] for row in rows)


def create_database(admin: psycopg.Connection[TupleRow], name: str) -> str:
    """A login role and a database of that ``name``, the role its owner and the only one
    that may connect; returns the role's new password."""
    password = secrets.token_urlsafe(32)
    role = sql.Identifier(name)
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)))
    admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(role, role))
    admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(role))
    return password


def become_owner(uid: int, gid: int, folders: list[Path]) -> None:
    """Run as root: make ``folders`` private to ``uid:gid`` and switch to that user.
    Run as anyone else: nothing to hand over, the folders are created as the caller."""
    if os.geteuid() != 0:
        return
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)  # while root still owns it
        os.chown(folder, uid, gid)
    if (uid, gid) != (0, 0):
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


@contextlib.contextmanager
def password_file_for_libpq(
    args: argparse.Namespace, databases: dict[str, str], passwords: dict[str, str]
) -> Iterator[None]:
    """While provisioning, libpq finds each member's password in a private passfile
    (PGPASSFILE), so that no password is written into a node.toml even briefly."""
    with tempfile.TemporaryDirectory() as folder:
        passfile = Path(folder) / "pgpass"
        passfile.touch(mode=0o600)
        passfile.write_text(
            "".join(
                f"{args.database_host}:{args.database_port}:{name}:{name}:{passwords[member]}\n"
                for member, name in databases.items()
            ),
            encoding="utf-8",
        )
        previous = os.environ.get("PGPASSFILE")
        os.environ["PGPASSFILE"] = str(passfile)
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("PGPASSFILE", None)
            else:
                os.environ["PGPASSFILE"] = previous


if __name__ == "__main__":
    sys.exit(main())
