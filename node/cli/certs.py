"""``credit-node certs …``: the federation CA's operator commands.

The CA operator runs ``init-ca`` once, ``issue`` for each member node, ``renew``
before a certificate expires (a new key, the same names), ``revoke`` when a key is lost,
a member leaves or a renewed certificate is in use (``--reason superseded``), and
``crl`` to re-sign the revocation list before its next_update; after each ``revoke``
or ``crl`` the new ``crl.pem`` is copied to every node. Key material is never printed:
the commands say where they wrote it.

On a node, ``status`` tells how long its certificate stays valid (exit 1 when it is due
for renewal) and ``install`` puts a renewed pair in place; the node serves it from its
next start (``deploy/operations/keys.md``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from creditexchange.certs.authority import (
    CA_DAYS,
    CRL_DAYS,
    DEFAULT_CA_NAME,
    MEMBER_DAYS,
    REASONS,
    CaFolder,
    init_ca,
    issue,
    publish_crl,
    read_index,
    renew,
    revoke,
)
from creditexchange.certs.credentials import certificate_status, replace_node_credentials
from creditexchange.certs.identity import member_dns_name
from creditexchange.errors import PolicyError
from creditexchange.node.app.config import load_config
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    out,
    print_json,
    reports_errors,
)
from creditexchange.policy.trust import TrustStore

__all__ = [
    "certs_app",
]

certs_app = typer.Typer(
    help="The federation PKI: create the CA, issue node certificates, revoke, publish the CRL.",
    no_args_is_help=True,
)


def say(message: str) -> None:
    """Print a line that names files or serials unwrapped, so that they can be copied."""
    out.print(message, soft_wrap=True)


CaOption = Annotated[Path, typer.Option("--ca", help="the CA folder (made by init-ca)")]


@certs_app.command("init-ca")
@reports_errors
def init_ca_command(
    out_dir: Annotated[Path, typer.Option("--out", help="a new folder for the CA")],
    name: Annotated[str, typer.Option(help="the CA's common name")] = DEFAULT_CA_NAME,
    days: Annotated[int, typer.Option(help="how long the CA is valid")] = CA_DAYS,
) -> None:
    """Create the federation CA: key (mode 600), certificate, issuance index, empty CRL."""
    folder = init_ca(out_dir, name=name, days=days)
    say(f"created the CA {name!r} in {folder.path}:")
    say(f"  {folder.key} (mode 600; keep this folder offline)")
    say(f"  {folder.certificate} (give it to every node as its trust root)")
    say(f"  {folder.index}, {folder.crl}")


@certs_app.command("issue")
@reports_errors
def issue_command(
    member: Annotated[str, typer.Argument(help="the member id, e.g. huizhou")],
    ca: CaOption,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="where to write the key and certificate", show_default="CA/members"
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="how long the certificate is valid")] = MEMBER_DAYS,
    dns: Annotated[
        list[str] | None,
        typer.Option(
            "--dns", help="another DNS name the node is reached by (repeat; e.g. localhost)"
        ),
    ] = None,
    ip: Annotated[
        list[str] | None,
        typer.Option("--ip", help="an IP address of the node (repeat; e.g. 127.0.0.1)"),
    ] = None,
) -> None:
    """Issue a node certificate (server and client) for MEMBER, signed by the CA.

    It names the member and MEMBER.member.credit-exchange, which peers pin, and
    only the --dns names and --ip addresses given besides: loopback names
    (localhost, 127.0.0.1, ::1) only when asked for.
    """
    issued = issue(member, ca, out_dir=out_dir, days=days, dns_names=dns or (), ips=ip or ())
    record = issued.record
    say(f"issued {member}'s certificate, serial {record.serial_hex}")
    say(f"  valid until {record.not_after:%Y-%m-%d %H:%M} UTC")
    say(f"  sha256 fingerprint {record.fingerprint}")
    say(f"  wrote {issued.key_path} (mode 600) and {issued.certificate_path}")
    say(f"  peers reach it pinning the name {member_dns_name(member)}")


@certs_app.command("renew")
@reports_errors
def renew_command(
    certificate: Annotated[
        Path, typer.Argument(help="the certificate in use (the node's tls/node.crt)")
    ],
    ca: CaOption,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="a folder for the new key and certificate",
            show_default="CA/members/<id>-<time>",
        ),
    ] = None,
    days: Annotated[int, typer.Option(help="how long the new certificate is valid")] = MEMBER_DAYS,
) -> None:
    """Issue the successor of a node certificate: a new key, the same member and names.

    Hand the two files to the node (over a secure channel) and install them there with
    'credit-node certs install'; once it serves them, revoke the old serial with
    --reason superseded.
    """
    issued = renew(certificate, ca, out_dir=out_dir, days=days)
    record = issued.record
    say(f"issued {record.member}'s renewed certificate, serial {record.serial_hex}")
    say(f"  valid until {record.not_after:%Y-%m-%d %H:%M} UTC")
    say(f"  sha256 fingerprint {record.fingerprint}")
    say(f"  wrote {issued.key_path} (mode 600) and {issued.certificate_path}")
    say(
        f"next, on the node: credit-node certs install --cert {issued.certificate_path} "
        f"--key {issued.key_path} --home HOME"
    )


@certs_app.command("status")
@reports_errors
def status_command(
    home: HomeOption,
    within: Annotated[
        int, typer.Option(help="exit 1 when the certificate expires within this many days")
    ] = 30,
    as_json: JsonOption = False,
) -> None:
    """This node's certificate: member, serial, fingerprint, validity; exit 1 when it is
    due for renewal (expires within --within days) or expired."""
    config = load_config(home)
    status = certificate_status(config.tls_cert_path)
    due = status.due(within)
    if as_json:
        print_json(
            {
                "member": status.member,
                "serial": f"{status.serial:x}",
                "fingerprint": status.fingerprint,
                "not_before": status.not_before.isoformat(),
                "not_after": status.not_after.isoformat(),
                "days_left": round(status.days_left, 2),
                "due": due,
            }
        )
    else:
        say(f"{config.tls_cert_path}: {status.member}'s certificate, serial {status.serial:x}")
        say(f"  sha256 fingerprint {status.fingerprint}")
        say(
            f"  valid {status.not_before:%Y-%m-%d %H:%M} to {status.not_after:%Y-%m-%d %H:%M} "
            f"UTC ({status.days_left:.0f} days left)"
        )
        if due:
            err.print(
                f"due for renewal: it expires within {within} days; ask the CA operator to "
                f"run 'credit-node certs renew {config.tls_cert_path.name} --ca CA_DIR' on "
                "this certificate",
                soft_wrap=True,
            )
    if due:
        raise typer.Exit(1)


@certs_app.command("install")
@reports_errors
def install_command(
    home: HomeOption,
    certificate: Annotated[Path, typer.Option("--cert", help="the renewed certificate")],
    key: Annotated[Path, typer.Option("--key", help="its private key (mode 600)")],
) -> None:
    """Put a renewed certificate and key in place of this node's; restart the node after.

    Refused, changing nothing, unless the pair fits (the key is the certificate's, issued
    by the federation CA, valid now, for this member, not revoked, pinned by the
    memorandum when it pins certificates). The previous pair is kept beside it.
    """
    config = load_config(home)
    try:
        _, memorandum = TrustStore(config.policy_dir).current()
    except PolicyError:
        pinned: list[str] = []  # no memorandum installed yet: nothing pinned
    else:
        member = memorandum.member_by_id.get(config.member_id)
        pinned = list(member.certificate_fingerprints) if member is not None else []
    replaced = replace_node_credentials(
        certificate,
        key,
        certificate_path=config.tls_cert_path,
        key_path=config.tls_key_path,
        ca_path=config.tls_ca_path,
        crl_path=config.tls_crl_path,
        pinned=pinned,
    )
    current = replaced.current
    say(
        f"installed {current.member}'s certificate, serial {current.serial:x}, valid until "
        f"{current.not_after:%Y-%m-%d %H:%M} UTC, as {config.tls_cert_path}"
    )
    if replaced.kept_certificate is not None:
        say(f"  the previous pair is kept as {replaced.kept_certificate} and {replaced.kept_key}")
    say(
        "next: restart the node (it reads its certificate when it starts), check that peers "
        "answer it, then have the CA revoke the previous serial with --reason superseded"
    )


@certs_app.command("revoke")
@reports_errors
def revoke_command(
    serial: Annotated[str, typer.Argument(help="the certificate's serial, hex (see 'list')")],
    ca: CaOption,
    reason: Annotated[
        str, typer.Option(help=f"one of: {', '.join(sorted(REASONS))}")
    ] = "keyCompromise",
    crl_days: Annotated[int, typer.Option(help="how long the new CRL is valid")] = CRL_DAYS,
) -> None:
    """Revoke a certificate and publish a new CRL that lists it."""
    record = revoke(serial, ca, reason=reason, crl_days=crl_days)
    say(f"{record.member}'s certificate {record.serial_hex} is revoked ({record.reason})")
    say(f"wrote {CaFolder(ca).crl}: copy it to every node")


@certs_app.command("crl")
@reports_errors
def crl_command(
    ca: CaOption,
    days: Annotated[int, typer.Option(help="how long the new CRL is valid")] = CRL_DAYS,
) -> None:
    """Re-sign the revocation list (new number, new next_update) with no other change."""
    crl = publish_crl(ca, days=days)
    say(
        f"wrote {crl.source}: CRL number {crl.number}, {len(crl.revoked)} revoked, "
        f"next update {crl.next_update:%Y-%m-%d %H:%M} UTC; copy it to every node"
    )


@certs_app.command("list")
@reports_errors
def list_command(ca: CaOption, as_json: JsonOption = False) -> None:
    """Every certificate the CA has issued: serial, member, expiry, revocation."""
    records = read_index(ca)
    if as_json:
        print_json([record.to_json() for record in records])
        return
    table = Table(box=None, pad_edge=False)  # fits 80 columns
    table.add_column("serial", no_wrap=True, min_width=40)  # copied whole into 'revoke'
    table.add_column("member", no_wrap=True)
    table.add_column("expires", no_wrap=True)
    table.add_column("revoked", overflow="fold")
    for record in records:
        revoked = f"{record.revoked_at:%Y-%m-%d} {record.reason}" if record.revoked_at else ""
        table.add_row(record.serial_hex, record.member, f"{record.not_after:%Y-%m-%d}", revoked)
    out.print(table)
    if records:
        say("dates in UTC; 'list --json' gives the exact times and fingerprints")
