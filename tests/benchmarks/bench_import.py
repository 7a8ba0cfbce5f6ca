"""Import throughput with full validation, against the bare insert of the same rows.

For each backend (SQLite, and PostgreSQL unless --no-postgres) in one run:

* project: ``import_file`` on a generated penalty file of N records — reading,
  decoding check, validation of every field and identifier, idempotency lookup,
  subjects, reject handling, one transaction per chunk;
* baseline: the same rows, already validated and held in memory, written into the
  same table in the same chunk size with plain ``executemany`` (SQLite) or
  ``COPY`` (PostgreSQL), nothing else.

Then the lookup of one subject's records at that size: p50/p99 of the node's read
path (``subject_view``: query, JSON decode, masking) and of the bare indexed SQL
query as its baseline.

The last line printed is one JSON object: ``ratio`` (SQLite records/s over its
baseline), ``p99_ratio`` (lookup p99 over the bare query's), and the absolutes.

    python tests/benchmarks/bench_import.py --quick
    python tests/benchmarks/bench_import.py --records 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import Engine

from creditexchange.devtools.sample import write_theme
from creditexchange.node.catalog import Catalog, load_catalog
from creditexchange.node.database import create_database_engine, upgrade
from creditexchange.node.records.importer import import_file
from creditexchange.node.records.sources import open_table
from creditexchange.node.records.validation import RowValidator, ValidRow
from creditexchange.node.records.view import subject_view

THEME = "admin_penalty"
CHUNK = 5000
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
COLUMNS = (
    "theme, record_key, subject_id, source_department, fields, decision_date, "
    "valid_until, publicity_end, status, version, content_hash, batch_id, updated_at"
)


def validated_rows(catalog: Catalog, path: Path) -> list[ValidRow]:
    theme = catalog.theme(THEME)
    validator = RowValidator(theme, theme.source_department)
    with path.open("rb") as f:
        checked = [
            validator.check(line, cast(Mapping[str, str], row))
            for line, row in open_table(f, "csv", "utf-8-sig", theme, path).rows()
        ]
    rows = [r for r in checked if isinstance(r, ValidRow)]
    assert len(rows) == len(checked), "the generated file must be valid"
    return rows


def tuples(rows: list[ValidRow], postgres: bool) -> list[tuple[Any, ...]]:
    stamp = "2026-11-27 00:00:00.000000" + ("+00:00" if postgres else "")
    return [
        (
            THEME,
            r.record_key,
            r.subject_id,
            "market_regulation",
            r.fields_json,
            r.decision_date,
            r.valid_until,
            r.publicity_end,
            "active",
            1,
            r.content_hash,
            None,
            stamp,
        )
        for r in rows
    ]


def baseline_sqlite(engine: Engine, values: list[tuple[Any, ...]]) -> float:
    with engine.connect() as conn:
        start = time.perf_counter()
        for i in range(0, len(values), CHUNK):
            conn.exec_driver_sql(
                f"INSERT INTO records ({COLUMNS}) VALUES ({','.join('?' * 13)})",
                values[i : i + CHUNK],
            )
            conn.commit()
        return time.perf_counter() - start


def baseline_postgres(engine: Engine, values: list[tuple[Any, ...]]) -> float:
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        start = time.perf_counter()
        for i in range(0, len(values), CHUNK):
            with cursor.copy(f"COPY records ({COLUMNS}) FROM STDIN") as copy:
                for value in values[i : i + CHUNK]:
                    copy.write_row(value)
            conn.commit()
        return time.perf_counter() - start


def percentile(samples: list[float], q: int) -> float:
    return (
        statistics.quantiles(samples, n=100, method="inclusive")[q - 1]
        if len(samples) > 1
        else samples[0]
    )


def lookups(
    engine: Engine, catalog: Catalog, subjects: list[str], postgres: bool
) -> dict[str, float]:
    node_times, bare_times = [], []
    sql = "SELECT * FROM records WHERE subject_id = " + ("%s" if postgres else "?")
    with engine.connect() as conn:
        for sid in subjects:
            start = time.perf_counter()
            conn.exec_driver_sql(sql, (sid,)).fetchall()
            bare_times.append(time.perf_counter() - start)
    for sid in subjects:
        start = time.perf_counter()
        subject_view(engine, catalog, sid)
        node_times.append(time.perf_counter() - start)
    return {
        "lookup_p50_ms": round(percentile(node_times, 50) * 1000, 3),
        "lookup_p99_ms": round(percentile(node_times, 99) * 1000, 3),
        "bare_lookup_p50_ms": round(percentile(bare_times, 50) * 1000, 3),
        "bare_lookup_p99_ms": round(percentile(bare_times, 99) * 1000, 3),
    }


def run_backend(
    name: str,
    project_url: str,
    baseline_url: str,
    catalog: Catalog,
    path: Path,
    rows: list[ValidRow],
    n_lookups: int,
    scratch: Path,
) -> dict[str, Any]:
    postgres = name == "postgres"
    base_engine = create_database_engine(baseline_url)
    upgrade(base_engine)
    values = tuples(rows, postgres)
    base_seconds = (baseline_postgres if postgres else baseline_sqlite)(base_engine, values)
    base_engine.dispose()

    engine = create_database_engine(project_url)
    upgrade(engine)
    start = time.perf_counter()
    summary = import_file(
        engine, catalog, path, THEME, reject_dir=scratch / "rejects", chunk_rows=CHUNK
    )
    seconds = time.perf_counter() - start
    assert summary.inserted == len(rows) and summary.rejected == 0, summary
    sample = random.Random(7).sample([r.subject_id for r in rows], min(n_lookups, len(rows)))
    result = {
        f"{name}_records_per_s": round(len(rows) / seconds),
        f"{name}_baseline_records_per_s": round(len(rows) / base_seconds),
        f"{name}_ratio": round(base_seconds / seconds, 3),
    }
    result.update({f"{name}_{k}": v for k, v in lookups(engine, catalog, sample, postgres).items()})
    engine.dispose()
    return result


def postgres_schema_url(schema: str) -> str:
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{PG_URL}?options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 records: under a minute")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    n = 50_000 if args.quick else args.records
    catalog = load_catalog()
    result: dict[str, Any] = {"benchmark": "import", "records": n}
    with tempfile.TemporaryDirectory(prefix="bench-import-") as scratch_dir:
        scratch = Path(scratch_dir)
        path = write_theme(catalog, THEME, "huizhou", n, 11, scratch / f"{THEME}.csv")
        rows = validated_rows(catalog, path)
        print(f"generated {n} records ({path.stat().st_size / 1e6:.1f} MB)", file=sys.stderr)
        result.update(
            run_backend(
                "sqlite",
                f"sqlite:///{scratch / 'project.db'}",
                f"sqlite:///{scratch / 'baseline.db'}",
                catalog,
                path,
                rows,
                args.lookups,
                scratch,
            )
        )
        print(json.dumps(result), file=sys.stderr)
        if not args.no_postgres:
            schemas = [f"bench_{uuid.uuid4().hex[:8]}" for _ in range(2)]
            try:
                project_url, baseline_url = (postgres_schema_url(s) for s in schemas)
                result.update(
                    run_backend(
                        "postgres",
                        project_url,
                        baseline_url,
                        catalog,
                        path,
                        rows,
                        args.lookups,
                        scratch,
                    )
                )
            finally:
                for schema in schemas:
                    drop_schema(schema)
    result["ratio"] = result["sqlite_ratio"]
    result["records_per_s"] = result["sqlite_records_per_s"]
    result["baseline_records_per_s"] = result["sqlite_baseline_records_per_s"]
    result["p99_ratio"] = round(
        result["sqlite_lookup_p99_ms"] / max(result["sqlite_bare_lookup_p99_ms"], 1e-6), 3
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
