"""``credit-node serve --workers N``: several processes serving one node on one machine.

Python answers calls on one core per process, so a node uses more cores by being
several processes. The supervisor starts N workers (``credit-node serve --worker
i/N``), each a whole serving node on the same gRPC port (SO_REUSEPORT: the kernel
spreads the connections). The database decides replays, quotas and the ledger's
order for all of them (``creditexchange.node.exchange.replay``, ``quotas``,
``creditexchange.node.ledger.log``).

Worker 0 serves the REST gateway and the metrics on the configured ports and may
lead the background duties (``leadership``); worker i serves metrics on
``metrics_port + i`` and no gateway. The supervisor forwards SIGINT and SIGTERM to
every worker and waits for them; if a worker stops on its own, it stops the others
and exits 1, so that systemd or the container runtime restarts the node whole.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from creditexchange.errors import ConfigError
from creditexchange.node.app.config import NodeConfig

__all__ = ["MAX_WORKERS", "parse_worker", "run_workers", "worker_config"]

log = logging.getLogger("node.workers")

MAX_WORKERS = 64


def parse_worker(text: str) -> tuple[int, int]:
    """``i/N`` -> (i, N), checked."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--worker {text!r}: expected i/N, e.g. 0/2") from None
    if not 0 <= index < count <= MAX_WORKERS:
        raise ConfigError(f"--worker {text!r}: i must be from 0 to N-1, N at most {MAX_WORKERS}")
    return index, count


def worker_config(config: NodeConfig, index: int) -> NodeConfig:
    """Worker ``index``'s settings: worker 0 as configured; the others without the
    gateway, their metrics on ``metrics_port + index``."""
    settings = config.settings
    if index == 0:
        return config
    metrics_port = settings.metrics_port + index if settings.metrics_port else 0
    if metrics_port > 65535:
        raise ConfigError(f"metrics_port {settings.metrics_port} + worker {index} exceeds 65535")
    update = {"gateway_port": 0, "metrics_port": metrics_port}
    return type(config)(config.home, settings.model_copy(update=update))


def run_workers(home: Path, count: int, *, port: int | None, log_level: str) -> int:
    """Run ``count`` workers until SIGINT/SIGTERM or one of them stops; the exit code."""
    if not 2 <= count <= MAX_WORKERS:
        raise ConfigError(f"--workers must be from 1 to {MAX_WORKERS}")
    if port == 0:
        raise ConfigError("--workers needs a fixed port: the workers share it")
    command = [sys.executable, "-m", "creditexchange.node.cli", "serve", "--home", str(home)]
    command += ["--log-level", log_level]
    if port is not None:
        command += ["--port", str(port)]
    workers: list[subprocess.Popen[bytes]] = []
    stopping = failed = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for index in range(count):
            workers.append(subprocess.Popen([*command, "--worker", f"{index}/{count}"]))
        while any(worker.poll() is None for worker in workers):
            ended = [(i, w.returncode) for i, w in enumerate(workers) if w.returncode is not None]
            if ended and not stopping:
                index, code = ended[0]
                log.error(
                    "a worker stopped; stopping the others",
                    extra={"data": {"worker": index, "exit_code": code}},
                )
                print(
                    f"worker {index} stopped (exit code {code}); stopping the other workers",
                    file=sys.stderr,
                )
                failed = True
                stop(signal.SIGTERM, None)
            time.sleep(0.2)
        return 1 if failed else 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
