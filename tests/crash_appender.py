"""Child process of the ledger crash test: append forever, print each acknowledged index.

Usage: python crash_appender.py DATABASE_URL SIGNING_SEED_HEX CONCURRENCY
An index is printed (and flushed) only after ``append`` returned, i.e. after the
entry is durable; the parent kills this process with SIGKILL at a random moment.
"""

from __future__ import annotations

import asyncio
import os
import sys

from nacl.signing import SigningKey

from creditexchange.node.database import create_database_engine
from creditexchange.node.ledger import AuditLog, Ledger
from creditexchange.node.ledger.note import Signer


async def main(url: str, seed_hex: str, concurrency: int) -> None:
    store = AuditLog(
        create_database_engine(url), Signer("crash-test/audit", SigningKey(bytes.fromhex(seed_hex)))
    )
    async with Ledger(store, max_batch=64) as ledger:

        async def worker(n: int) -> None:
            i = 0
            while True:
                receipt = await ledger.append(f"pid {os.getpid()} worker {n} entry {i}".encode())
                sys.stdout.write(f"{receipt.index}\n")
                sys.stdout.flush()
                i += 1

        await asyncio.gather(*(worker(n) for n in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
