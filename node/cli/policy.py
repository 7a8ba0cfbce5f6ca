"""``credit-node policy …``: the memorandum's keys, signatures, installation and decisions.

A new memorandum version goes through these steps: each signing member runs
``policy sign`` with its key on the same file; any operator can ``policy verify``
it against the version in force; each node ``policy install``s it, which applies
TUF's update rules (a threshold of the current version's keys and of the new
one's, a higher version, not expired) and keeps the last good version otherwise.

A node's signing key is rotated through two such versions (``deploy/operations/keys.md``):
``policy next-key`` makes the next key and prints its entry; a version listing it beside
the current key is signed and installed everywhere; ``policy use-next-key`` (node
stopped) makes it the node's key; a later version without the old key ends the overlap.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from nacl.signing import SigningKey
from rich.text import Text

from creditexchange.errors import PolicyError
from creditexchange.node.app.config import load_config
from creditexchange.node.app.keys import (
    create_next_signing_key,
    load_signing_key,
    next_key_path,
    switch_signing_key,
    write_new_signing_key,
)
from creditexchange.node.app.wiring import open_node
from creditexchange.node.catalog import load_catalog
from creditexchange.node.cli.common import (
    HomeOption,
    JsonOption,
    err,
    out,
    print_json,
    reports_errors,
)
from creditexchange.node.exchange.quotas import usage_this_period
from creditexchange.policy.corpus import run_corpus
from creditexchange.policy.document import Mode, parse_memorandum
from creditexchange.policy.engine import DecisionRequest, PolicyEngine
from creditexchange.policy.trust import (
    TrustStore,
    check_signatures,
    load_envelope,
    memorandum_hash,
    read_memorandum_file,
    sign,
    signing_key_entry,
    verify_new,
)

__all__ = [
    "policy_app",
]

policy_app = typer.Typer(
    help="The sharing memorandum: keys, signatures, installation, decisions.",
    no_args_is_help=True,
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", "utf-8")
    tmp.replace(path)


@policy_app.command("keygen")
@reports_errors
def keygen(
    out_path: Annotated[Path, typer.Option("--out", help="where to write the new key (mode 600)")],
) -> None:
    """Create a member signing key and print its entry for the memorandum's `keys` list.

    Keep memorandum keys offline, like TUF root keys; a node's own signing key
    (``keys/signing.key``) may serve as well: ``policy key --home DIR`` prints its entry.
    """
    key = write_new_signing_key(out_path)
    entry = signing_key_entry(key.verify_key)
    out.print(f"wrote {out_path} (mode 600); add this to your member's keys in the memorandum:")
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())


@policy_app.command("key")
@reports_errors
def key(home: HomeOption) -> None:
    """Print the `keys` entry of this node's signing key, for the memorandum."""
    config = load_config(home)
    entry = signing_key_entry(load_signing_key(config.signing_key_path).verify_key)
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())


@policy_app.command("next-key")
@reports_errors
def next_key(home: HomeOption) -> None:
    """Create the key that will replace this node's signing key, and print its entry.

    Put the entry beside the current key in this member's `keys` in the next memorandum
    version; once that version is installed on every node, run `policy use-next-key`.
    Run again, it prints the same key's entry.
    """
    config = load_config(home)
    verify_key, created = create_next_signing_key(config)
    path = next_key_path(config.signing_key_path)
    out.print(
        f"{'wrote' if created else 'kept'} {path} (mode 600); add this beside the current key "
        f"in {config.member_id}'s keys in the next memorandum version:",
        soft_wrap=True,
    )
    print(yaml.safe_dump([signing_key_entry(verify_key)], sort_keys=False).rstrip())


@policy_app.command("use-next-key")
@reports_errors
def use_next_key(home: HomeOption) -> None:
    """Make the next signing key this node's key (stop the node first; start it after).

    Refused, changing nothing, unless the memorandum in force here lists the next key
    for this member. The rotation is recorded in the audit ledger; the old key is kept
    in keys/retired/ until a memorandum without it is in force (then destroy it).
    """
    node = open_node(home)
    rotation = switch_signing_key(node.config, node.database, _now())
    done = "recorded as" if rotation.recorded_now else "already recorded as"
    out.print(
        f"signing key {rotation.in_force[:16]}… is this node's key from ledger entry "
        f"{rotation.from_index} on ({done} that entry)",
        soft_wrap=True,
    )
    out.print(
        f"the retired key {rotation.retired[:16]}… is kept in {rotation.kept_at}", soft_wrap=True
    )
    out.print(
        "next: start the node; once every member has installed a memorandum version without "
        "the retired key, destroy that file",
        soft_wrap=True,
    )


@policy_app.command("sign")
@reports_errors
def sign_command(
    file: Annotated[Path, typer.Argument(help="the memorandum: .yaml source or signed .json")],
    key_file: Annotated[Path, typer.Option("--key", help="a member's signing key file")],
    out_path: Annotated[Path | None, typer.Option("--out", help="default: FILE as .json")] = None,
) -> None:
    """Add one member's signature to a memorandum (a .yaml source becomes a signed .json)."""
    envelope = read_memorandum_file(file)
    signed = sign(envelope, SigningKey(load_signing_key(key_file).encode()))
    target = out_path or file.with_suffix(".json")
    _write_json(target, signed)
    out.print(f"signed; {len(signed['signatures'])} signature(s) in {target}")


@policy_app.command("verify")
@reports_errors
def verify_command(
    file: Annotated[Path, typer.Argument(help="the signed memorandum (.json)")],
    current: Annotated[
        Path | None, typer.Option(help="the version in force, to check the update rules")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Say which signatures count and whether the threshold and update rules hold."""
    envelope, memorandum = load_envelope(file.read_text("utf-8"))
    current_pair = load_envelope(current.read_text("utf-8")) if current else None
    own = check_signatures(envelope, memorandum)
    by_current = check_signatures(envelope, current_pair[1]) if current_pair else None
    problem = None
    try:
        verify_new(envelope, current=current_pair, now=_now())
    except PolicyError as exc:
        problem = str(exc)
    report = {
        "version": memorandum.version,
        "expires": memorandum.expires.isoformat(),
        "hash": memorandum_hash(envelope["signed"]).hex(),
        "own_keys": own.as_dict(),
        "current_keys": None if by_current is None else by_current.as_dict(),
        "valid": problem is None,
        "problem": problem,
    }
    if as_json:
        print_json(report)
    else:
        out.print(f"memorandum version {memorandum.version}, expires {report['expires']}")
        out.print(f"hash {report['hash']}")
        for label, check in (("its own keys", own), ("the current version's keys", by_current)):
            if check is None:
                continue
            out.print(
                f"signatures by {label}: {len(check.counted)} of {check.threshold} needed"
                + (" — met" if check.met else " — NOT met")
            )
            for keyid, member in check.counted.items():
                out.print(f"  counted  {member} ({keyid[:16]}…)")
            for ignored in check.ignored:
                out.print(f"  ignored  {ignored.describe()}")
        if problem:
            err.print(Text.assemble(("not valid:", "bold red"), f" {problem}"))
        else:
            out.print("valid" + (" as an update of the current version" if current else ""))
    if problem:
        raise typer.Exit(1)


@policy_app.command("install")
@reports_errors
def install(
    file: Annotated[Path, typer.Argument(help="the signed memorandum (.json)")],
    home: HomeOption,
) -> None:
    """Install a memorandum on this node, applying the update rules (last good kept)."""
    config = load_config(home)
    memorandum = TrustStore(config.policy_dir).install(file, _now())
    out.print(
        f"installed memorandum version {memorandum.version} "
        f"(expires {memorandum.expires.isoformat()}) in {config.policy_dir}"
    )


@policy_app.command("show")
@reports_errors
def show(home: HomeOption, as_json: JsonOption = False) -> None:
    """Show the memorandum installed on this node."""
    config = load_config(home)
    envelope, memorandum = TrustStore(config.policy_dir).current()
    digest = memorandum_hash(envelope["signed"]).hex()
    if as_json:
        print_json({"hash": digest, **envelope["signed"]})
        return
    expired = memorandum.expires <= _now()
    out.print(Text.assemble((memorandum.title_zh, "bold"), f" / {memorandum.title_en}"))
    out.print(
        Text.assemble(
            f"version {memorandum.version}, expires {memorandum.expires.isoformat()}",
            (" EXPIRED: cross-city answers are stopped", "bold red") if expired else "",
        )
    )
    out.print(f"hash {digest}; threshold {memorandum.threshold} of {len(memorandum.members)}")
    for m in memorandum.members:
        out.print(f"  {m.id:10} {m.role.value:8} {m.name_zh} {m.endpoint} ({len(m.keys)} key(s))")
    out.print(f"{len(memorandum.purposes)} purposes, {len(memorandum.rules)} rules")
    for r in memorandum.rules:
        out.print(f"  {r.effect.value:7} {r.id}: {r.intent.splitlines()[0]}")


@policy_app.command("explain")
@reports_errors
def explain(
    requester: Annotated[str, typer.Option()],
    purpose: Annotated[str, typer.Option()],
    subject_type: Annotated[str, typer.Option()],
    theme: Annotated[str, typer.Option()],
    home: Annotated[Path | None, typer.Option("--home", envvar="CREDIT_NODE_HOME")] = None,
    memorandum_file: Annotated[
        Path | None, typer.Option("--memorandum", help="a .yaml or .json file instead of --home")
    ] = None,
    provider: Annotated[str | None, typer.Option(help="default: this node's member id")] = None,
    mode: Annotated[Mode, typer.Option(help="full, or check (hit / no-hit only)")] = Mode.FULL,
    case_reference: str = "case-1",
    officer: str = "officer-1",
    as_json: JsonOption = False,
) -> None:
    """Show the decision for a request and why: the rules, the fields, the reason."""
    if memorandum_file is not None:
        envelope = read_memorandum_file(memorandum_file)
        memorandum = parse_memorandum(envelope["signed"], str(memorandum_file))
        catalog = load_catalog()
    elif home is not None:
        node = open_node(home)
        envelope, memorandum = TrustStore(node.config.policy_dir).current()
        catalog = node.catalog
        provider = provider or node.config.member_id
    else:
        raise typer.BadParameter("give --home (the installed memorandum) or --memorandum FILE")
    if provider is None:
        raise typer.BadParameter("give --provider: whose data is asked for")
    engine = PolicyEngine(memorandum, memorandum_hash(envelope["signed"]), catalog)
    now = _now()
    # On a node, the quota counters in its store say how much of each quota is used.
    used = (
        usage_this_period(node.database, requester, engine.quotas, now)
        if memorandum_file is None
        else {}
    )
    decision = engine.decide(
        DecisionRequest(
            requester=requester,
            provider=provider,
            purpose=purpose,
            subject_type=subject_type,
            theme=theme,
            mode=mode,
            time=now,
            case_reference=case_reference,
            officer=officer,
            quota_used=used,
        )
    )
    data: dict[str, Any] = {
        "allowed": decision.allowed,
        "status": decision.status,
        "mode": decision.mode.value if decision.mode else None,
        "rules": list(decision.rule_ids),
        "reason": decision.reason,
        "reveal": sorted(decision.reveal),
        "mask": sorted(decision.mask),
        "withhold": sorted(decision.withhold),
        "memorandum_version": decision.memorandum_version,
        "memorandum_hash": decision.memorandum_hash.hex(),
    }
    if as_json:
        print_json(data)
    else:
        verdict = ("ALLOW", "bold green") if decision.allowed else ("DENY", "bold red")
        out.print(Text.assemble(verdict, f" ({decision.status}) — {decision.reason}"))
        out.print(
            f"rules: {', '.join(decision.rule_ids) or '(none: deny by default)'}; "
            f"memorandum v{decision.memorandum_version} {data['memorandum_hash'][:16]}…"
        )
        if decision.allowed:
            out.print(f"mode {data['mode']}")
            out.print(f"revealed: {', '.join(data['reveal']) or '-'}")
            out.print(f"masked:   {', '.join(data['mask']) or '-'}")
            out.print(f"withheld: {', '.join(data['withhold']) or '-'}")
    if not decision.allowed:
        raise typer.Exit(1)


@policy_app.command("test")
@reports_errors
def test_corpus(
    corpus: Annotated[Path, typer.Argument(help="a decision test corpus (.yaml)")],
) -> None:
    """Run a decision test corpus; exits 1 when any case fails."""
    results = run_corpus(corpus, load_catalog())
    failed = [r for r in results if not r.passed]
    for r in failed:
        err.print(Text.assemble(("FAIL", "red"), f" {r.name}: {r.message}"))
    out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)
