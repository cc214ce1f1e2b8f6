"""`server.workers` > 1: N worker processes sharing the listen addresses via SO_REUSEPORT.

The supervisor only starts workers, restarts one that dies, and forwards signals: SIGHUP
(each worker reloads on its own, keeping its old config if the new one is invalid) and
SIGTERM/SIGINT (each worker drains; the supervisor exits when all have).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

import trio

log = logging.getLogger("gateway")

RESTART_BACKOFF_S = 0.5


class Supervisor:
    def __init__(self, config_path: str, workers: int) -> None:
        self.config_path = config_path
        self.workers = workers
        self.stopping = False
        self.processes: dict[int, trio.Process] = {}

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "gateway", "--config", self.config_path, "--worker"]

    async def _keep_worker(self, index: int) -> None:
        while not self.stopping:
            process = await trio.lowlevel.open_process(self._command(), stdin=subprocess.DEVNULL)
            self.processes[index] = process
            code = await process.wait()
            if self.stopping:
                return
            log.error("worker %d (pid %d) exited with %s; restarting", index, process.pid, code)
            await trio.sleep(RESTART_BACKOFF_S)

    def _signal_all(self, signum: int) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signum)

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT, then wait for every worker to drain."""
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                for index in range(self.workers):
                    nursery.start_soon(self._keep_worker, index)
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        self._signal_all(signal.SIGHUP)
                        continue
                    self.stopping = True
                    self._signal_all(signal.SIGTERM)
                    break
