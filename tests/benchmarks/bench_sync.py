"""Syncing customs' feed end to end, against a local import of the same records.

In one run:

* **prepare** (timed, not compared): N generated customs grades written as a
  department file, imported into the publisher's store (customs) with the real
  importer, and published to its feed;
* **end to end**: customs serving as ``credit-node serve`` in a process of its own, huizhou
  (this process) syncing all N changes from it over mutual TLS with its
  :class:`Subscriber` — each page pulled, recorded in customs' ledger, verified
  (signature, consistency proof, leaf hashes, every change's sanity), applied with
  its cursor and recorded in huizhou's ledger;
* **baseline**: the same department file imported into a fresh store of the same
  backend with the real importer (``import_file``): how fast the subscriber's store
  takes the same records when nobody has to send or prove them.

The last line printed is one JSON object: ``records_per_s`` (end to end),
``baseline_records_per_s``, ``ratio`` (end to end over the baseline; the aim is at
least 0.5, and 20,000 records/s end to end), the pages and their size, and the
times of each phase. ``--postgres URL`` puts both stores and the baseline's in
fresh schemas of that database; ``--profile FILE`` writes a cProfile of the
subscriber's sync (the publisher: ``py-spy record --pid`` on its process).

    python tests/benchmarks/bench_sync.py --quick
    python tests/benchmarks/bench_sync.py --records 200000
    python tests/benchmarks/bench_sync.py --quick --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the other benchmarks
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the tests' helpers
from bench_exchange import cpu_seconds, postgres_schema
from ports import free_ports
from synchelpers import (
    customs_feed_log,
    import_customs,
    publish,
    publisher_digest,
    serve,
    stop,
    subscriber_digest,
)

from creditexchange.devtools.provision import provision
from creditexchange.node.app.config import NodeConfig
from creditexchange.node.app.wiring import open_client, open_ledger
from creditexchange.node.catalog import load_catalog
from creditexchange.node.database import create_database_engine, open_database, upgrade
from creditexchange.node.records.importer import import_file
from creditexchange.node.sync.subscribe import CAUGHT_UP, Subscriber

THEME = "customs_credit_grade"
PUBLISHER, SUBSCRIBER = "customs", "huizhou"


async def sync_all(config: NodeConfig, page: int, profile: cProfile.Profile | None) -> Any:
    """huizhou catches up customs' grade feed; its result."""
    database = open_database(config.database_url)
    try:
        async with (
            open_ledger(config, database) as ledger,
            open_client(config, ledger=ledger) as client,
        ):
            subscriber = Subscriber.of_client(client, ledger, page=page)
            if profile is not None:
                profile.enable()
            try:
                [result] = await subscriber.run_once(PUBLISHER, THEME)
            finally:
                if profile is not None:
                    profile.disable()
            return result
    finally:
        database.dispose()


def say(line: str) -> None:
    print(f"  {line}", file=sys.stderr)


def run(args: argparse.Namespace, urls: dict[str, str]) -> dict[str, Any]:
    root = Path(args.home or tempfile.mkdtemp(prefix="bench-sync-"))
    nodes = provision(
        root,
        members=(PUBLISHER, SUBSCRIBER),
        ports=free_ports(2),
        database_urls={m: urls[m] for m in (PUBLISHER, SUBSCRIBER) if m in urls},
        subjects=0,
    )
    catalog = load_catalog()
    customs_config = nodes[PUBLISHER].config
    customs = open_database(customs_config.database_url)
    grades = root / "grades.csv"
    started = time.perf_counter()
    imported = import_customs(customs, catalog, grades, THEME, args.records, seed=11)
    import_s = time.perf_counter() - started
    feeds = customs_feed_log(customs_config, customs)
    started = time.perf_counter()
    published = publish(customs_config, feeds).get(THEME, 0)
    publish_s = time.perf_counter() - started
    say(f"customs: {imported.accepted} grades imported in {import_s:.2f} s, "
        f"{published} changes published in {publish_s:.2f} s")  # fmt: skip

    server = serve(nodes[PUBLISHER].home, nodes[PUBLISHER].port)
    pid = server.pid
    assert pid is not None
    try:
        profile = cProfile.Profile() if args.profile else None
        served_cpu = cpu_seconds(pid)
        cpu = time.process_time()
        started = time.perf_counter()
        result = asyncio.run(sync_all(nodes[SUBSCRIBER].config, args.page, profile))
        sync_s = time.perf_counter() - started
        sync_cpu = time.process_time() - cpu
        publisher_cpu = cpu_seconds(pid) - served_cpu
    finally:
        stop(server)
    if profile is not None:
        profile.dump_stats(args.profile)
    if result.outcome != CAUGHT_UP or result.applied != published:
        raise SystemExit(f"the sync did not finish: {result}")
    huizhou = open_database(nodes[SUBSCRIBER].config.database_url)
    if subscriber_digest(huizhou, PUBLISHER, [THEME]) != publisher_digest(customs, [THEME]):
        raise SystemExit("huizhou's copy differs from customs' records")
    say(f"end to end: {published} changes in {sync_s:.2f} s "
        f"({published / sync_s:,.0f}/s; subscriber CPU {sync_cpu:.2f} s, "
        f"publisher CPU {publisher_cpu:.2f} s)")  # fmt: skip

    baseline_url = urls.get("baseline") or f"sqlite:///{root / 'baseline.db'}"
    baseline = create_database_engine(baseline_url)
    upgrade(baseline)
    started = time.perf_counter()
    local = import_file(baseline, catalog, grades, THEME, reject_dir=root / "rejects")
    baseline_s = time.perf_counter() - started
    say(f"baseline: {local.accepted} grades imported locally in {baseline_s:.2f} s "
        f"({local.accepted / baseline_s:,.0f}/s)")  # fmt: skip
    for engine in (customs, huizhou, baseline):
        engine.dispose()

    end_to_end = published / sync_s
    local_rate = local.accepted / baseline_s
    return {
        "records": published,
        "records_per_s": round(end_to_end),
        "baseline_records_per_s": round(local_rate),
        "ratio": round(end_to_end / local_rate, 3),
        "pages": -(-published // args.page),
        "page": args.page,
        "sync_s": round(sync_s, 3),
        "baseline_s": round(baseline_s, 3),
        "generate_and_import_s": round(import_s, 3),
        "publish_s": round(publish_s, 3),
        "subscriber_cpu_s": round(sync_cpu, 3),
        "publisher_cpu_s": round(publisher_cpu, 3),
        "store": "postgresql" if urls else "sqlite",
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small run, under a minute")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--page", type=int, default=5000, help="changes asked per page")
    parser.add_argument("--postgres", help="both stores in fresh schemas of this database")
    parser.add_argument("--home", help="keep the provisioned nodes here")
    parser.add_argument("--profile", help="cProfile the subscriber's sync into this file")
    args = parser.parse_args()
    if args.quick:
        args.records = 30_000
    with contextlib.ExitStack() as stack:
        urls: dict[str, str] = {}
        if args.postgres:
            urls = {
                name: stack.enter_context(postgres_schema(args.postgres))
                for name in (PUBLISHER, SUBSCRIBER, "baseline")
            }
        figures = run(args, urls)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
