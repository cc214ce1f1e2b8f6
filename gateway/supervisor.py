"""`server.workers` > 1: N worker processes sharing the listen addresses via SO_REUSEPORT.

The supervisor only starts workers, restarts one that dies, and forwards signals: SIGHUP
(each worker reloads on its own, keeping its old config if the new one is invalid), SIGUSR1
(each worker reopens its access log) and SIGTERM/SIGINT (each worker drains; the
supervisor exits when all have). With the prometheus plugin it also serves the export
address: each worker writes its counts to a file in the supervisor's private directory
every second, and a scrape gets their sum.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import trio

from gateway.accesslog import AccessLog
from gateway.config.load import parse
from gateway.config.model import Config
from gateway.errors import ConfigErrors
from gateway.exporter import ExportServer
from gateway.metrics import METRICS_FILE_ENV, merged_or_none, shared_snapshots
from gateway.runtime import Runtime, compile_config
from gateway.server import SIGNALS, open_listener
from gateway.wakeup import deferred

log = logging.getLogger("gateway")

RESTART_BACKOFF_S = 0.5


class Supervisor:
    def __init__(self, config_path: str, workers: int) -> None:
        self.config_path = config_path
        self.workers = workers
        self.stopping = False
        self.processes: dict[int, trio.Process] = {}
        # Private (0700): the copy holds what the file holds, secrets included.
        self._copy_dir = tempfile.mkdtemp(prefix="gateway-config-")
        self.copy_path = os.path.join(self._copy_dir, "config.json")
        self.addresses: list[str] = []
        # The metrics export server, when the config has one (see `take_config`).
        self.export_uri = b""
        self.metric_prefix = ""
        self.exporter = ExportServer()

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "gateway", "--config", self.copy_path, "--worker"]

    def _metrics_file(self, index: int) -> str:
        return os.path.join(self._copy_dir, f"metrics-{index}.bin")

    def take_config(self) -> bool:
        """Copy the config file for the workers if it is valid; False (and logged) if not."""
        checked = self._check_file()
        return checked is not None and self._adopt(*checked)

    async def retake_config(self) -> bool:
        """`take_config` for SIGHUP: the file checked on a worker thread (a large config
        takes seconds), so the export address keeps answering meanwhile."""
        # The check's own registries never run here: what it would wake stays asleep.
        checked, _ = await trio.to_thread.run_sync(deferred, self._check_file)
        return checked is not None and self._adopt(*checked)

    def _check_file(self) -> tuple[bytes, Config, Runtime] | None:
        """The file's bytes, config and runtime when valid; None (and why, logged) if not."""
        try:
            with open(self.config_path, "rb") as f:
                data = f.read()
            config = parse(data)
            runtime = compile_config(config)
            AccessLog(config.server.access_log).close()  # as each worker will open it
        except OSError as exc:
            log.error(
                "reload refused, the previous config keeps serving: %s: %s",
                exc.filename,
                exc.strerror,
            )
            return None
        except ConfigErrors as exc:
            log.error("reload refused, the previous config keeps serving:\n%s", exc)
            return None
        return data, config, runtime

    def _adopt(self, data: bytes, config: Config, runtime: Runtime) -> bool:
        wanted = runtime.metrics_address
        try:
            listener = self.exporter.bind(wanted)
        except OSError as exc:
            self.exporter.say_refused(wanted, exc)
            return False
        self.exporter.move(wanted, listener)
        self.export_uri = runtime.export_uri
        self.metric_prefix = runtime.metric_prefix
        self.addresses = config.server.addresses + config.server.ssl_addresses
        staged = self.copy_path + ".new"
        with open(staged, "wb") as f:
            f.write(data)
        os.replace(staged, self.copy_path)  # a worker starting now reads one whole file
        return True

    async def _keep_worker(self, index: int) -> None:
        while not self.stopping:
            env = {**os.environ, METRICS_FILE_ENV: self._metrics_file(index)}
            process = await trio.lowlevel.open_process(
                self._command(), stdin=subprocess.DEVNULL, env=env
            )
            self.processes[index] = process
            code = await process.wait()
            if self.stopping:
                return
            log.error("worker %d (pid %d) exited with %s; restarting", index, process.pid, code)
            await trio.sleep(RESTART_BACKOFF_S)

    def _can_listen(self) -> bool:
        """Whether the workers will be able to bind every listen address (as nginx's master
        binds before it forks): a worker that cannot would be restarted forever."""
        for address in self.addresses:
            try:
                open_listener(address, reuse_port=True, listen=False).close()
            except OSError as exc:
                log.error("cannot serve: %s", exc)
                return False
        return True

    def _render_metrics(self) -> bytes:
        metrics, stats = merged_or_none(shared_snapshots(self._copy_dir), socket.gethostname())
        return metrics.render(self.metric_prefix, stats)

    def _signal_all(self, signum: int) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signum)

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT, then wait for every worker to drain; the exit code."""
        if not self.take_config() or not self._can_listen():
            self.exporter.close()
            shutil.rmtree(self._copy_dir, ignore_errors=True)
            return 1
        try:
            with trio.open_signal_receiver(*SIGNALS) as signals:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        self.exporter.serve, lambda: self.export_uri, self._render_metrics
                    )
                    for index in range(self.workers):
                        nursery.start_soon(self._keep_worker, index)
                    async for signum in signals:
                        if signum == signal.SIGHUP:
                            if await self.retake_config():
                                log.info("workers reload %s", self.config_path)
                                self._signal_all(signal.SIGHUP)
                            continue
                        if signum == signal.SIGUSR1:
                            self._signal_all(signal.SIGUSR1)
                            continue
                        self.stopping = True
                        self._signal_all(signal.SIGTERM)
                        break
                    self.exporter.stop()
        finally:
            self.exporter.close()
            shutil.rmtree(self._copy_dir, ignore_errors=True)
        return 0
