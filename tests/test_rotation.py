"""Rotating a node's keys and renewing its certificate, as ``deploy/operations/keys.md``
says, each on a real federation on loopback (shenzhen's store in PostgreSQL) and with
the commands an operator runs:

* the signing key, through two memorandum versions the members sign (the next key
  listed beside the current one, then the current one dropped): requests signed with the
  new key are answered, the old key is refused once the overlap ends, and the ledger's
  checkpoints signed before the rotation still verify;
* the subject-HMAC key: an auditor's subject search finds the entries before and after
  the rotation, and refuses a key file that is not the key its history names;
* the TLS certificate: renewed before it expires, installed, served after a restart,
  accepted by the peers both ways, the old one revoked.

Single-home cases (a retired key used after its retirement, a history edited in the
database, a rotation interrupted half-way) run on SQLite and PostgreSQL.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from conftest import postgres_schema
from fedharness import Federation
from nacl.signing import SigningKey
from ports import free_ports
from sqlalchemy import select, update
from typer.testing import CliRunner

from creditexchange.certs.identity import member_dns_name
from creditexchange.clock import now_us
from creditexchange.devtools.provision import ProvisionedNode, signed_memorandum
from creditexchange.devtools.sample import showcase_subject
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.home import create_home
from creditexchange.node.app.keys import (
    SIGNING,
    SUBJECT_HMAC,
    hmac_key_id,
    key_history,
    load_hmac_key,
    load_signing_key,
    load_subject_key_ring,
    next_key_path,
    retired_key_path,
    signing_keys_in_force,
)
from creditexchange.node.app.wiring import open_audit_log, open_node
from creditexchange.node.cli import app
from creditexchange.node.database import open_database
from creditexchange.node.database.models import CHECKPOINTS, NODE_KEYS
from creditexchange.node.exchange.envelope import seal
from creditexchange.node.exchange.protocol import QUERY_REQUEST
from creditexchange.node.ledger import AuditLog, entries, origin_for, verify
from creditexchange.node.ledger.note import Signer, Verifier, key_id, open_note
from creditexchange.node.ledger.search import EntryFilter, search
from creditexchange.policy.trust import TrustStore, sign
from creditexchange.v1 import exchange_pb2

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

H, S = "huizhou", "shenzhen"
ENTERPRISE = showcase_subject(H, 2026)
PROCUREMENT = {
    "purpose": "public_procurement",
    "legal_basis": "政府采购法第二十二条",
    "case_reference": "CG-2026-0001",
    "officer": "officer-7",
}
runner = CliRunner()


def cli(*args: str, home: Path | None = None) -> tuple[int, str]:
    argv = [*args, "--home", str(home)] if home is not None else list(args)
    result = runner.invoke(app, argv)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    with postgres_schema() as pg_url:
        federation = Federation(tmp_path_factory.mktemp("rotation"), (H, S), {S: pg_url}, 20)
        try:
            yield federation
        finally:
            federation.close()


# --- the memorandum, as the members update it ----------------------------------------------


def _installed(fed: Federation, member: str = H) -> tuple[dict[str, Any], Any]:
    return TrustStore(fed.nodes[member].config.policy_dir).current()


def _next_version(fed: Federation, change: Callable[[dict[str, Any]], None]) -> int:
    """The installed memorandum with ``change`` made and the next version number, signed
    by every member's present key and installed on every node with ``policy install``."""
    envelope, memorandum = _installed(fed)
    signed = copy.deepcopy(envelope["signed"])
    signed["version"] = memorandum.version + 1
    change(signed)
    offered: dict[str, Any] = {"signed": signed, "signatures": []}
    for member in fed.nodes:
        offered = sign(offered, fed.signing_key(member))
    path = fed.root / f"memorandum-v{signed['version']}.json"
    path.write_text(json.dumps(offered, ensure_ascii=False))
    for node in fed.nodes.values():
        code, output = cli("policy", "install", str(path), home=node.home)
        assert code == 0, output
    time.sleep(1.2)  # a serving node looks at its installed memorandum once a second
    return int(signed["version"])


def _member_keys(signed: dict[str, Any], member: str) -> list[dict[str, str]]:
    keys: list[dict[str, str]] = next(m for m in signed["members"] if m["id"] == member)["keys"]
    return keys


def _query_signed_by(
    fed: Federation, key: SigningKey, requester: str = S, provider: str = H
) -> tuple[Any, grpc.aio.AioRpcError | None]:
    """A query crafted as ``requester`` and signed with ``key``, sent over its own TLS."""
    _, memorandum = _installed(fed, provider)
    header = fed.header(requester, provider, memorandum_version=memorandum.version)
    payload = exchange_pb2.QueryRequest(header=header, subject_id=ENTERPRISE).SerializeToString()
    envelope = seal(QUERY_REQUEST, payload, key)
    return fed.raw(provider, "Query", envelope, fed.credentials(requester))


def _checkpoint_note(config: NodeConfig, size: int) -> str:
    database = open_database(config.database_url)
    try:
        with database.connect() as conn:
            note = conn.execute(select(CHECKPOINTS.c.note).where(CHECKPOINTS.c.size == size))
            return str(note.scalar_one())
    finally:
        database.dispose()


def _verifier(config: NodeConfig, key: SigningKey) -> Verifier:
    origin = origin_for(config.member_id, config.settings.federation)
    public = bytes(key.verify_key)
    return Verifier(origin, key_id(origin, public), public)


# --- 1. the signing key -------------------------------------------------------------------------


def test_a_member_rotates_its_signing_key_through_memoranda_the_members_sign(
    fed: Federation,
) -> None:
    home = fed.nodes[S].home
    old_key = fed.signing_key(S)
    answered = fed.ask(S, ENTERPRISE, to=H, **PROCUREMENT)
    assert answered.to_json()["status"] == "OK"

    # 1. the next key, its entry for the memorandum
    code, output = cli("policy", "next-key", home=home)
    assert code == 0, output
    (entry,) = yaml.safe_load(output[output.index("- key_id") :])
    next_key = load_signing_key(next_key_path(fed.nodes[S].config.signing_key_path))
    assert entry["public_key"] == bytes(next_key.verify_key).hex()
    code, again = cli("policy", "next-key", home=home)  # asked again: the same key
    assert code == 0 and entry["key_id"] in again

    # the switch is refused while the node serves, and before the memorandum lists the key
    code, output = cli("policy", "use-next-key", home=home)
    assert code == 2 and "is in use: the node seems to be serving" in output
    fed.stop(S)
    code, output = cli("policy", "use-next-key", home=home)
    assert code == 2 and f"not the next key {entry['key_id'][:16]}" in output
    assert bytes(fed.signing_key(S)) == bytes(old_key)  # nothing changed
    fed.start(S)

    # 2. version 2 lists both keys (the overlap); every node installs it
    overlap = _next_version(fed, lambda signed: _member_keys(signed, S).append(entry))
    _, error = _query_signed_by(fed, next_key)  # the new key counts from now on …
    assert error is None, error.details()
    _, error = _query_signed_by(fed, old_key)  # … and so does the old one, for now
    assert error is None, error.details()

    # 3. the node switches to the next key (stopped), and starts again
    fed.stop(S)
    code, output = cli("policy", "use-next-key", home=home)
    assert code == 0, output
    assert "is this node's key from ledger entry" in output
    fed.start(S)
    config = fed.nodes[S].config
    assert bytes(fed.signing_key(S)) == bytes(next_key)
    kept = retired_key_path(config.signing_key_path, entry_key_id(old_key))
    assert bytes(load_signing_key(kept)) == bytes(old_key)
    assert not next_key_path(config.signing_key_path).exists()
    code, output = cli("audit", "keys", "--json", home=home)
    history = [row for row in json.loads(output) if row["kind"] == SIGNING]
    assert [row["key_id"] for row in history] == [entry_key_id(old_key), entry["key_id"]]
    rotated_at = history[1]["from_index"]
    assert history[1]["recorded_as"] == rotated_at

    answer = fed.ask(S, ENTERPRISE, to=H, **PROCUREMENT)  # signed with the new key
    assert answer.to_json()["status"] == "OK" and answer.memorandum_version == overlap

    # 4. version 3 drops the old key: the overlap ends
    _next_version(
        fed,
        lambda signed: _member_keys(signed, S).__setitem__(
            slice(None), [k for k in _member_keys(signed, S) if k["key_id"] == entry["key_id"]]
        ),
    )
    _, error = _query_signed_by(fed, old_key)
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
    refused = fed.ledger_entries(H)[-1]
    assert refused["requester"] == S and refused["outcome"]["status"] == "UNAUTHENTICATED"
    _, error = _query_signed_by(fed, next_key)
    assert error is None, error.details()
    assert fed.ask(S, ENTERPRISE, to=H, **PROCUREMENT).to_json()["status"] == "OK"

    # 5. the ledger signed before the rotation still verifies, each part with its key
    code, output = cli("audit", "verify", home=home)
    assert code == 0, output
    assert "signed checkpoints consistent" in output
    before = _checkpoint_note(config, rotated_at)
    after = _checkpoint_note(config, rotated_at + 1)
    assert open_note(before, [_verifier(config, old_key)])
    with pytest.raises(ValueError):
        open_note(before, [_verifier(config, next_key)])
    assert open_note(after, [_verifier(config, next_key)])

    # 6. a peer's witness follows the log across the rotation, and the node takes its
    # cosignature on a checkpoint signed by the new key
    (result,) = fed.run(fed.servers[H].witness.round())
    assert result.outcome == "cosigned" and result.delivered, result.detail
    code, output = cli("audit", "verify", "--witnessed", home=home)
    assert code == 0, output


def entry_key_id(key: SigningKey) -> str:
    return hashlib.sha256(bytes(key.verify_key)).hexdigest()


# --- 2. the subject-HMAC key --------------------------------------------------------------------


def test_an_auditor_finds_a_subject_before_and_after_the_subject_key_rotation(
    fed: Federation,
) -> None:
    home = fed.nodes[H].home
    config = fed.nodes[H].config
    first = fed.ask(S, ENTERPRISE, to=H, **PROCUREMENT).receipt.leaf_index
    old_secret = load_hmac_key(config.subject_hmac_key_path)

    fed.stop(H)
    code, output = cli("audit", "rotate-subject-key", home=home)
    assert code == 0, output
    assert "keys the subjects from ledger entry" in output
    fed.start(H)

    second = fed.ask(S, ENTERPRISE, to=H, **PROCUREMENT).receipt.leaf_index
    assert fed.entry_at(H, first).subject_hmac != fed.entry_at(H, second).subject_hmac
    assert hmac_key_id(load_hmac_key(config.subject_hmac_key_path)) != hmac_key_id(old_secret)

    code, output = cli(
        "audit", "search", "--subject", ENTERPRISE, "--officer", "auditor-1", "--json", home=home
    )
    assert code == 0, output
    found = json.loads(output)
    indices = [row["index"] for row in found["entries"]]
    assert first in indices and second in indices
    assert found["keys"] == 2
    assert ENTERPRISE not in output  # the subject only as its HMAC
    recorded = fed.entry_at(H, found["recorded_as"])  # the search is itself recorded
    assert recorded.officer == "auditor-1" and recorded.subject_hmac

    # a retired key file that is not the key its history names is refused, not used
    history = key_history(open_node(home).database, SUBJECT_HMAC)
    retired = retired_key_path(config.subject_hmac_key_path, history[0].key_id)
    good = retired.read_bytes()
    retired.write_text(SigningKey.generate().encode().hex() + "\n")
    code, output = cli("audit", "search", "--subject", ENTERPRISE, "--officer", "a", home=home)
    assert code == 2 and "not the subject HMAC key" in output and "restore" in output
    retired.unlink()
    code, output = cli("audit", "search", "--subject", ENTERPRISE, "--officer", "a", home=home)
    assert code == 2 and f"restore {retired}" in output
    retired.write_bytes(good)
    retired.chmod(0o600)
    code, output = cli("audit", "search", "--subject", ENTERPRISE, "--officer", "a", home=home)
    assert code == 0, output


# --- 3. the TLS certificate ---------------------------------------------------------------------


def _served_fingerprint(fed: Federation, member: str, client: str) -> str:
    """SHA-256 of the certificate ``member``'s node serves, as ``client`` sees it."""
    tls = fed.nodes[client].home / "tls"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(tls / "ca.crt")
    context.load_cert_chain(tls / "node.crt", tls / "node.key")
    context.set_alpn_protocols(["h2"])
    address = ("127.0.0.1", fed.nodes[member].port)
    with (
        socket.create_connection(address, timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=member_dns_name(member)) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def test_a_renewed_certificate_is_served_after_a_restart_and_accepted_both_ways(
    fed: Federation, tmp_path: Path
) -> None:
    home, ca = fed.nodes[H].home, fed.root / "ca"
    tls = home / "tls"
    code, output = cli("certs", "status", "--within", "30", "--json", home=home)
    assert code == 0, output
    old = json.loads(output)
    code, output = cli("certs", "status", "--within", "95", home=home)
    assert code == 1 and "due for renewal" in output

    # the CA renews it: a new key, the same member and names
    code, output = cli(
        "certs", "renew", str(tls / "node.crt"), "--ca", str(ca), "--out", str(tmp_path),
        "--days", "120",
    )  # fmt: skip
    assert code == 0, output
    new_crt, new_key = tmp_path / f"{H}.crt", tmp_path / f"{H}.key"
    code, output = cli("certs", "install", "--cert", str(new_crt), "--key", str(new_key), home=home)
    assert code == 0, output
    code, output = cli("certs", "status", "--within", "95", "--json", home=home)
    assert code == 0, output
    new = json.loads(output)
    assert new["member"] == H and new["serial"] != old["serial"]
    assert (tls / f"node.crt.{old['serial']}").exists()

    # the running node serves the old one until it restarts
    assert _served_fingerprint(fed, H, S) == old["fingerprint"]
    fed.restart(H)
    assert _served_fingerprint(fed, H, S) == new["fingerprint"]
    assert fed.ask(S, ENTERPRISE, to=H, **PROCUREMENT).to_json()["status"] == "OK"
    assert fed.ask(H, showcase_subject(S, 2026), to=S, **PROCUREMENT).to_json()["status"] == "OK"

    # the old certificate is revoked as superseded; the list goes to every node
    code, output = cli("certs", "revoke", old["serial"], "--ca", str(ca), "--reason", "superseded")
    assert code == 0, output
    for node in fed.nodes.values():
        shutil.copy(ca / "crl.pem", node.home / "tls" / "crl.pem")
    time.sleep(1.5)  # a node re-reads its list within a second of it changing
    assert fed.ask(S, ENTERPRISE, to=H, **PROCUREMENT).to_json()["status"] == "OK"
    assert fed.ask(H, showcase_subject(S, 2026), to=S, **PROCUREMENT).to_json()["status"] == "OK"
    old_pair = fed.credentials(
        H, cert=tls / f"node.crt.{old['serial']}", key=tls / f"node.key.{old['serial']}"
    )
    header = fed.header(H, S, memorandum_version=_installed(fed, S)[1].version)
    request = exchange_pb2.QueryRequest(header=header, subject_id=showcase_subject(S, 2026))
    envelope = seal(QUERY_REQUEST, request.SerializeToString(), fed.signing_key(H))
    _, error = fed.raw(S, "Query", envelope, old_pair)
    assert error is not None and "revoked" in (error.details() or "")

    # and the old pair cannot be put back
    code, output = cli(
        "certs", "install", "--cert", str(tls / f"node.crt.{old['serial']}"),
        "--key", str(tls / f"node.key.{old['serial']}"), home=home,
    )  # fmt: skip
    assert code == 2 and "revocation list" in output


# --- single homes, on SQLite and PostgreSQL -----------------------------------------------------


@pytest.fixture
def homes(tmp_path: Path, database_url: str) -> dict[str, ProvisionedNode]:
    """Two node homes (huizhou's store at ``database_url``) with a memorandum both signed
    and installed; no certificates, no data: the keys and the ledger are what counts."""
    ports = free_ports(2)
    nodes = {}
    for i, member in enumerate((H, S)):
        create_home(
            tmp_path / member,
            member,
            database_url=database_url if member == H else None,
            grpc_port=ports[i],
        )
        nodes[member] = ProvisionedNode(member, tmp_path / member, ports[i], 0)
    envelope = signed_memorandum(nodes)
    for node in nodes.values():
        TrustStore(node.config.policy_dir).install(envelope, _now())
    return nodes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _list_next_key(nodes: dict[str, ProvisionedNode]) -> None:
    """Version 2 of the memorandum, listing huizhou's next key beside its present one."""
    config = nodes[H].config
    envelope, memorandum = TrustStore(config.policy_dir).current()
    signed = copy.deepcopy(envelope["signed"])
    signed["version"] = memorandum.version + 1
    public = load_signing_key(next_key_path(config.signing_key_path)).verify_key
    _member_keys(signed, H).append(
        {"key_id": hashlib.sha256(bytes(public)).hexdigest(), "public_key": bytes(public).hex()}
    )
    offered: dict[str, Any] = {"signed": signed, "signatures": []}
    for node in nodes.values():
        offered = sign(offered, load_signing_key(node.config.signing_key_path))
    for node in nodes.values():
        TrustStore(node.config.policy_dir).install(offered, _now())


def _append(log: AuditLog, n: int) -> None:
    for i in range(n):
        log.commit([entries.maintenance(f"entry {i}", H, now_us())])


def test_a_checkpoint_signed_with_a_retired_key_after_the_rotation_is_reported(
    homes: dict[str, ProvisionedNode],
) -> None:
    node = open_node(homes[H].home)
    config = node.config
    _append(open_audit_log(config, node.database), 3)
    old_key = load_signing_key(config.signing_key_path)
    code, output = cli("policy", "next-key", home=config.home)
    assert code == 0, output
    _list_next_key(homes)
    code, output = cli("policy", "use-next-key", home=config.home)
    assert code == 0, output
    _append(open_audit_log(config, node.database), 2)
    keys = signing_keys_in_force(config, node.database)
    assert [(k.first, k.last) for k in keys] == [(0, 3), (4, None)]
    assert verify(open_audit_log(config, node.database), keys).ok

    # a process that kept the old key goes on signing: each such checkpoint is named
    stale = AuditLog(node.database, Signer(origin_for(H, "3plus2"), old_key))
    stale.commit([entries.maintenance("written with the retired key", H, now_us())])
    code, output = cli("audit", "verify", home=config.home)
    assert code == 1
    assert "checkpoint at size 7: signed by the node's key" in output
    assert "which was not in force at that size" in output


def test_an_interrupted_switch_is_finished_and_an_edited_history_is_refused(
    homes: dict[str, ProvisionedNode],
) -> None:
    node = open_node(homes[H].home)
    config = node.config
    _append(open_audit_log(config, node.database), 2)
    old_key = load_signing_key(config.signing_key_path)
    cli("policy", "next-key", home=config.home)
    _list_next_key(homes)
    code, output = cli("policy", "use-next-key", home=config.home)
    assert code == 0, output
    new_key = load_signing_key(config.signing_key_path)
    size = open_audit_log(config, node.database).size()

    # as if the command had stopped after recording the rotation, before moving the key
    pending = next_key_path(config.signing_key_path)
    shutil.copy(config.signing_key_path, pending)
    shutil.copy(
        retired_key_path(config.signing_key_path, entry_key_id(old_key)), config.signing_key_path
    )
    code, output = cli("audit", "verify", home=config.home)
    assert code == 2 and "run the rotation command again to finish" in output
    code, output = cli("policy", "use-next-key", home=config.home)
    assert code == 0 and "already recorded as that entry" in output, output
    assert bytes(load_signing_key(config.signing_key_path)) == bytes(new_key)
    assert open_audit_log(config, node.database).size() == size  # recorded once
    code, output = cli("audit", "verify", home=config.home)
    assert code == 0, output

    # the history names the entry recording each rotation; an edited row is refused
    with node.database.begin() as conn:
        conn.execute(
            update(NODE_KEYS)
            .where(NODE_KEYS.c.kind == SIGNING, NODE_KEYS.c.recorded_as.is_not(None))
            .values(key_id="0" * 64)
        )
    code, output = cli("audit", "verify", home=config.home)
    assert code == 2 and "table node_keys) was altered" in output


def test_subject_search_spans_rotations_and_refuses_a_replaced_key(
    homes: dict[str, ProvisionedNode], database_url: str
) -> None:
    node = open_node(homes[H].home)
    config = node.config
    log = open_audit_log(config, node.database)
    ring = load_subject_key_ring(config, node.database)
    lookups = []
    for rotation in range(3):  # three keys: the first, then two rotations
        hmac = ring.hmacs(ENTERPRISE)[0]
        lookups.append(log.commit([entries.operator_call(H, "o", "lookup", hmac, now_us())])[0])
        log.commit(
            [
                entries.operator_call(
                    H, "o", "another", ring.hmacs("91441300MA4UUUUU0B")[0], now_us()
                )
            ]
        )
        if rotation < 2:
            code, output = cli("audit", "rotate-subject-key", home=config.home)
            assert code == 0, output
            ring = load_subject_key_ring(config, node.database)
    assert len(ring.keys) == 3
    assert [k.from_index for k in ring.keys] == [0, 2, 5]

    page = search(log, EntryFilter(subject_hmac=ring.hmacs(ENTERPRISE)))
    assert [f.index for f in page.entries] == lookups
    only_current = search(log, EntryFilter(subject_hmac=ring.hmacs(ENTERPRISE)[0]))
    assert [f.index for f in only_current.entries] == lookups[-1:]  # what one key alone finds

    # the current key file replaced by another key: refused, never searched with
    current = config.subject_hmac_key_path
    good = current.read_bytes()
    current.write_text(SigningKey.generate().encode().hex() + "\n")
    code, output = cli(
        "audit", "search", "--subject", ENTERPRISE, "--officer", "a", home=config.home
    )
    assert code == 2 and "the file is not the key in force, and is not used" in output
    current.write_bytes(good)
    code, output = cli(
        "audit", "search", "--subject", ENTERPRISE, "--officer", "a", "--json", home=config.home
    )
    assert code == 0, output
    assert [r["index"] for r in json.loads(output)["entries"]] == lookups


def test_a_node_made_before_the_key_history_records_its_first_keys_when_it_rotates(
    homes: dict[str, ProvisionedNode],
) -> None:
    node = open_node(homes[H].home)
    config = node.config
    with node.database.begin() as conn:  # as a node migrated to the history's revision
        conn.execute(NODE_KEYS.delete())
    log = open_audit_log(config, node.database)
    first_secret = load_hmac_key(config.subject_hmac_key_path)
    before = log.commit(
        [
            entries.operator_call(
                H,
                "o",
                "lookup",
                load_subject_key_ring(config, node.database).hmacs(ENTERPRISE)[0],
                now_us(),
            )
        ]
    )[0]
    assert verify(log, signing_keys_in_force(config, node.database)).ok

    code, output = cli("audit", "rotate-subject-key", home=config.home)
    assert code == 0, output

    history = key_history(node.database, SUBJECT_HMAC)
    assert [(r.key_id, r.from_index, r.recorded_as) for r in history] == [
        (hmac_key_id(first_secret), 0, None),
        (hmac_key_id(load_hmac_key(config.subject_hmac_key_path)), 1, 1),
    ]
    ring = load_subject_key_ring(config, node.database)
    after = log.commit(
        [entries.operator_call(H, "o", "lookup", ring.hmacs(ENTERPRISE)[0], now_us())]
    )[0]
    page = search(log, EntryFilter(subject_hmac=ring.hmacs(ENTERPRISE)))
    assert [f.index for f in page.entries] == [before, after]
