"""The listening side of one gateway process: listeners, accept loops, reload and drain.

`Gateway.serve` binds every `server.listen` and `server.ssl_listen` address (TLS handshakes
with the certificates of `ssls`, see `https`), reports readiness through
`task_status.started(addresses)` and serves until `stop()`; then it stops accepting and
gives open connections `server.shutdown_timeout` seconds to finish. `reload()` swaps the
compiled runtime atomically (compiled on a worker thread) or keeps the old one when the
new file is invalid.
`run_process` wires this to signals: SIGHUP reloads, SIGUSR1 reopens the access log (as
nginx's, after a rotation), SIGTERM/SIGINT drain and exit.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import signal
import socket

import trio

from gateway import fetch
from gateway.accesslog import AccessLog
from gateway.config.load import load
from gateway.config.upstream import split_host_port
from gateway.downstream import ClientConnection
from gateway.errors import ConfigErrors
from gateway.exporter import ExportServer
from gateway.https import (
    PLAIN_HTTP_TO_HTTPS,
    HandshakeRefused,
    TlsConnection,
    handshake_failure,
)
from gateway.metrics import Metrics, ServerStats, merged_or_none, shared_snapshots
from gateway.ratelimit import LimitRegistry
from gateway.runtime import Runtime, compile_config
from gateway.upstream.pool import PoolManager
from gateway.upstream.prober import run_probes
from gateway.wakeup import deferred

log = logging.getLogger("gateway")
# What a gateway process (and the supervisor, which passes them on) acts on.
SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)

BACKLOG = 4096
ACCEPT_BURST = 64
POOL_REAP_INTERVAL_S = 1.0
METRICS_SHARE_S = 1.0  # how stale a worker's counts may be in the supervisor's export
LOG_FLUSH_S = 5.0  # at a stop, the time http-logger has to post what is queued


def open_listener(address: str, reuse_port: bool, *, listen: bool = True) -> socket.socket:
    """A non-blocking listening socket for `host:port` (`[v6]:port`); SO_REUSEPORT lets
    workers share it. Accepting is done by `_wait_accept`, on the plain socket, so that
    connections get plain sockets for `fastio`. With `listen=False` it is only bound (a
    check that the address can be had: a bound socket takes no connections). Raises
    OSError naming the address."""
    host, port = split_host_port(address, allow_port_zero=True)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        if listen:
            sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        # One line naming the address, as nginx's "bind() to ... failed".
        raise OSError(exc.errno, f"cannot listen on {address}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock


# Errors of one connection, not of the listener: Linux's accept passes on a network error
# already pending for the next connection (accept(2), NOTES: retry "like EAGAIN"), a
# firewall can refuse one with EPERM, a peer can abort before its accept. trio's own
# SocketListener skips the same list.
_SKIPPED_ACCEPT_ERRORS = frozenset(
    getattr(errno, name)
    for name in (
        "EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET",
        "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT",
        "EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET",
    )
    if hasattr(errno, name)
)  # fmt: skip


async def _wait_accept(listener: socket.socket) -> tuple[socket.socket, tuple[str, int]]:
    """The next connection (non-blocking, TCP_NODELAY) and its peer address; raises OSError
    for a fault of the listener (EMFILE and the like), never for one connection's."""
    while True:
        try:
            sock, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            await trio.lowlevel.wait_readable(listener)
            continue
        except OSError as exc:
            if exc.errno not in _SKIPPED_ACCEPT_ERRORS:
                raise
            await trio.lowlevel.checkpoint()  # never a busy loop, whatever accept keeps saying
            continue
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()  # reset before we could look at it: take the next one
            continue
        return sock, (str(peer[0]), int(peer[1]))


def settle_memory() -> None:
    """Collect once, then move every object alive now (the compiled config above all) out
    of the cyclic collector's sight (`gc.freeze`).

    Reference counting still frees them; only the periodic full collections stop walking
    them. With 100,000 consumers a full collection walked 1.1 million objects and stalled
    every connection for 0.5 s each time it ran under traffic. Called before serving and
    after each reload (whose own collection frees the old config's reference cycles).
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _close_listener(listener: socket.socket) -> None:
    """Close a listener that an accept loop may be waiting on (trio must be told first)."""
    if listener.fileno() >= 0:
        trio.lowlevel.notify_closing(listener)
        listener.close()


def _format_address(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Gateway:
    """One process's server: the current `Runtime`, upstream pools and open connections."""

    def __init__(
        self,
        config_path: str | None,
        runtime: Runtime,
        limits: LimitRegistry,
        *,
        reuse_port: bool = False,
        metrics_file: str | None = None,
    ) -> None:
        self.config_path = config_path
        self.runtime = runtime
        self.limits = limits
        self.idps = runtime.idps
        self.reuse_port = reuse_port
        self.pools = PoolManager()
        self.access_log = AccessLog(runtime.server.access_log)
        self.draining = False
        self.requests = 0
        self.accepted = 0
        # The prometheus plugin's counts outlive reloads, as APISIX's shared dict does.
        self.metrics = runtime.metrics
        self.metrics.totals = self._totals
        self.loggers = runtime.loggers
        self.mirrors = runtime.mirrors
        self.caches = runtime.caches  # proxy-cache's entries outlive reloads too
        # A worker of several shares its counts through this file (the supervisor serves
        # the sum); None: this process serves its own export address.
        self.metrics_file = metrics_file
        self.exporter = ExportServer()
        self.connections: set[ClientConnection] = set()
        self._accept_scope: trio.CancelScope | None = None
        self._probes_scope: trio.CancelScope | None = None
        self._stop_requested = False

    async def serve(
        self, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until `stop()`; then drain within `server.shutdown_timeout`."""
        settle_memory()
        server = self.runtime.server
        listeners: list[tuple[socket.socket, bool]] = []
        try:
            for listened, tls in ((server.addresses, False), (server.ssl_addresses, True)):
                for address in listened:
                    listeners.append((open_listener(address, self.reuse_port), tls))
        except BaseException:
            for listener, _ in listeners:  # the ones bound before the one that failed
                listener.close()
            raise
        addresses = [_format_address(ln.getsockname()) for ln, _ in listeners]
        if self.metrics_file is not None:
            self._take_over_metrics(self.metrics_file)
        else:
            wanted = self.runtime.metrics_address
            self.exporter.move(wanted, self.exporter.bind(wanted))
        limiter = trio.Semaphore(self.runtime.limits.max_connections)
        try:
            # http-logger's senders and proxy-mirror's copies outlive the draining
            # connections; the log entries left are flushed below.
            async with trio.open_nursery() as background:
                await background.start(self.loggers.run)
                await background.start(self.mirrors.run)
                try:
                    await self._serve_connections(listeners, addresses, limiter, task_status)
                finally:
                    background.cancel_scope.cancel()
            with trio.move_on_after(LOG_FLUSH_S):
                await self.loggers.flush()
        finally:
            for listener, _ in listeners:
                _close_listener(listener)
            self.exporter.close()
            if self.metrics_file is not None:
                self._write_metrics(self.metrics_file)
            self.pools.close_all()
            fetch.close_idle()
            self.access_log.close()

    async def _serve_connections(
        self,
        listeners: list[tuple[socket.socket, bool]],
        addresses: list[str],
        limiter: trio.Semaphore,
        task_status: trio.TaskStatus[list[str]],
    ) -> None:
        """Accept and serve until `stop()`; then close the listeners and let the requests in
        flight finish within `server.shutdown_timeout`."""
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                self._accept_scope = acceptors.cancel_scope
                # Redis clients for limit-count live in this nursery, entered before
                # the first request is accepted.
                await acceptors.start(self.limits.redis.run)
                # Identity providers load (each within its timeout) before accepting.
                await acceptors.start(self.idps.run)
                for listener, tls in listeners:
                    acceptors.start_soon(self._accept_loop, listener, tls, connections, limiter)
                acceptors.start_soon(self._reap_pools)
                acceptors.start_soon(self._run_probes)
                if self.metrics_file is None:
                    acceptors.start_soon(
                        self.exporter.serve, self._export_uri, self._render_metrics
                    )
                else:
                    acceptors.start_soon(self._share_metrics, self.metrics_file)
                log.info("gateway listening on %s", " ".join(addresses))
                task_status.started(addresses)
                if self._stop_requested:
                    acceptors.cancel_scope.cancel()
            for listener, _ in listeners:
                _close_listener(listener)
            grace = self.runtime.server.shutdown_timeout
            connections.cancel_scope.deadline = trio.current_time() + grace
            self._close_idle()

    def stop(self) -> None:
        """Stop accepting; idle keep-alive connections close, requests in flight finish."""
        self._stop_requested = True
        self.draining = True
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        self._close_idle()

    def _close_idle(self) -> None:
        """Close connections waiting for a request, except those whose next request has
        already arrived in the socket buffer: that request is served (then the connection
        closes), never dropped."""
        for conn in self.connections:
            if conn.idle_scope is not None and not conn.io.has_input():
                conn.idle_scope.cancel()

    def reopen_logs(self) -> None:
        """Open the access log file again by its path (after logrotate renamed it)."""
        target = self.runtime.server.access_log
        if not isinstance(target, str):
            return
        if self.access_log.reopen():
            log.info("reopened the access log %s", target)
        else:
            log.error("cannot reopen the access log %s: the old file is kept", target)

    async def reload(self) -> bool:
        """Re-read the config file; swap the runtime if valid, else keep the old one.

        The file is read, checked and compiled on a worker thread while the old config
        keeps serving (100,000 consumers take seconds; the trio thread only waits for the
        interpreter now and then), with the cyclic collector off meanwhile (it would walk
        the half-built config again and again); the swap is made here."""
        if self.config_path is None:
            return False
        gc.disable()
        try:
            runtime, noted = await trio.to_thread.run_sync(deferred, self._build)
        finally:
            gc.enable()
        for event in noted:  # the registries the new config handed work to
            event.set()
        return runtime is not None and self._swap(runtime)

    def _build(self) -> Runtime | None:
        """The new runtime, or None (and why, logged) when it cannot be had."""
        assert self.config_path is not None
        try:
            return compile_config(
                load(self.config_path),
                limits=self.limits,
                idps=self.idps,
                metrics=self.metrics,
                loggers=self.loggers,
                mirrors=self.mirrors,
                caches=self.caches,
            )
        except ConfigErrors as exc:
            self.limits.take_used()
            log.error("reload refused, the previous config keeps serving:\n%s", exc)
        except Exception:
            # A bug met while building the new config must not take the old one down.
            self.limits.take_used()
            log.exception("reload failed, the previous config keeps serving")
        return None

    def _swap(self, runtime: Runtime) -> bool:
        """Serve `runtime` from now on, unless what only the trio thread can set up for it
        (its access log file, its metrics address) fails."""
        access_log = None
        if runtime.server.access_log != self.runtime.server.access_log:
            try:
                access_log = AccessLog(runtime.server.access_log)
            except OSError as exc:
                self.limits.take_used()
                log.error(
                    "reload refused, the previous config keeps serving: access_log %s: %s",
                    runtime.server.access_log,
                    exc.strerror,
                )
                return False
        wanted = runtime.metrics_address if self.metrics_file is None else None
        try:
            metrics_listener = self.exporter.bind(wanted)
        except OSError as exc:
            self.limits.take_used()
            if access_log is not None:
                access_log.close()
            self.exporter.say_refused(wanted, exc)
            return False
        new, old = runtime.server, self.runtime.server
        for field, changed in (
            ("server.listen", new.addresses != old.addresses),
            ("server.ssl_listen", new.ssl_addresses != old.ssl_addresses),
            ("server.workers", new.workers != old.workers),
            (
                "server.limits.max_connections",
                new.limits.max_connections != old.limits.max_connections,
            ),
        ):
            if changed:
                log.warning("%s changed: restart the gateway to apply it", field)
        if access_log is not None:
            self.access_log.close()
            self.access_log = access_log
        runtime.carry_over_health(self.runtime)
        self.runtime = runtime
        self.exporter.move(wanted, metrics_listener)
        if self._probes_scope is not None:
            self._probes_scope.cancel()  # `_run_probes` starts the new config's
        # Counters whose scope and conf did not change carry on; the rest are dropped.
        self.limits.retain(runtime.limit_stores)
        settle_memory()
        log.info("config reloaded from %s", self.config_path)
        return True

    async def _accept_loop(
        self,
        listener: socket.socket,
        tls: bool,
        connections: trio.Nursery,
        limiter: trio.Semaphore,
    ) -> None:
        port = listener.getsockname()[1]
        burst = 0
        while True:
            # Past max_connections, stop accepting: the kernel backlog holds the rest.
            # Below it, take a slot without a trip through the scheduler: a burst of new
            # connections is accepted at once, not one per scheduling round (64 fresh
            # connections waited up to 0.6 s for their accept while the first ones were
            # being served), and yields every ACCEPT_BURST accepts so serving goes on.
            try:
                limiter.acquire_nowait()
            except trio.WouldBlock:
                await limiter.acquire()
                burst = 0
            burst += 1
            if burst >= ACCEPT_BURST:
                burst = 0
                try:
                    await trio.lowlevel.checkpoint()
                except BaseException:
                    limiter.release()
                    raise
            try:
                sock, peer = await _wait_accept(listener)
            except OSError as exc:
                limiter.release()
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed (%s); pausing", exc.strerror)
                    await trio.sleep(0.1)
                    continue
                raise
            except BaseException:
                limiter.release()
                raise
            self.accepted += 1
            connections.start_soon(self._serve_connection, sock, peer, port, limiter, tls)

    async def _serve_connection(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        port: int,
        limiter: trio.Semaphore,
        tls: bool,
    ) -> None:
        try:
            session = None
            if tls:
                session = await self._handshake(sock, peer)
                if session is None:
                    return
            conn = ClientConnection(self, sock, peer, port, session)
            self.connections.add(conn)
            try:
                await conn.serve()
            except Exception:
                # A bug met by one connection must not take the others down with it.
                log.exception("connection from %s failed", peer[0])
            finally:
                self.connections.discard(conn)
        finally:
            limiter.release()

    async def _handshake(self, sock: socket.socket, peer: tuple[str, int]) -> TlsConnection | None:
        """The connection to an HTTPS address, its handshake done within
        `server.limits.head_timeout` with the current config's certificates; None (and the
        socket closed) when it failed. Plain HTTP sent there gets nginx's 400 answer."""
        runtime = self.runtime
        certificates = runtime.certificates
        if certificates is None:  # no certificate in this config: `check` refuses that
            sock.close()
            return None
        tls = TlsConnection(sock)
        tls.send_timeout = runtime.limits.send_timeout
        failure: BaseException = TimeoutError("timed out")
        with trio.move_on_after(runtime.limits.head_timeout):
            try:
                await tls.handshake(certificates)
            except OSError as exc:  # ssl.SSLError and HandshakeRefused too
                failure = exc
            else:
                return tls
        if isinstance(failure, HandshakeRefused) and failure.plain_http:
            with trio.move_on_after(runtime.limits.send_timeout):
                with contextlib.suppress(OSError):
                    await tls.raw.send_all(PLAIN_HTTP_TO_HTTPS)
        log.info("TLS handshake from %s failed: %s", peer[0], handshake_failure(tls, failure))
        await trio.aclose_forcefully(tls)
        return None

    async def _run_probes(self) -> None:
        """The active health checks of the current config; a reload restarts them."""
        while True:
            with trio.CancelScope() as scope:
                self._probes_scope = scope
                async with trio.open_nursery() as nursery:
                    for probe in self.runtime.probes:
                        nursery.start_soon(run_probes, probe)
                    await trio.sleep_forever()

    def _export_uri(self) -> bytes:
        return self.runtime.export_uri

    def _stats(self) -> ServerStats:
        return ServerStats(
            accepted=self.accepted,
            active=len(self.connections),
            waiting=sum(1 for conn in self.connections if conn.idle_scope is not None),
            requests=self.requests,
            hostname=socket.gethostname(),
        )

    def _render_metrics(self) -> bytes:
        return self.metrics.render(self.runtime.metric_prefix, self._stats())

    def _totals(self) -> tuple[Metrics, ServerStats]:
        """For a public-api route: this process's counts and figures, and as a worker of
        several the others' too (as they last shared them, as the supervisor serves them)."""
        if self.metrics_file is None:
            return self.metrics, self._stats()
        own = self.metrics.snapshot(self._stats())
        others = shared_snapshots(os.path.dirname(self.metrics_file), skip=self.metrics_file)
        return merged_or_none([own, *others], socket.gethostname())

    def _take_over_metrics(self, path: str) -> None:
        """A restarted worker carries on from its predecessor's counts, so that the sum
        the supervisor serves never goes down (Prometheus would read a counter reset)."""
        try:
            with open(path, "rb") as f:
                stats = self.metrics.absorb(f.read())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("metrics of the previous worker not read: %s", exc)
            return
        self.requests += stats.requests
        self.accepted += stats.accepted

    async def _share_metrics(self, path: str) -> None:
        """Write this worker's counts for the supervisor every `METRICS_SHARE_S`."""
        while True:
            await trio.sleep(METRICS_SHARE_S)
            if self.runtime.shares_counts:
                data = self.metrics.snapshot(self._stats())  # here: the counts change
                await trio.to_thread.run_sync(_write_file, path, data)

    def _write_metrics(self, path: str) -> None:
        try:
            _write_file(path, self.metrics.snapshot(self._stats()))
        except OSError as exc:
            log.error("metrics not shared: %s", exc)

    async def _reap_pools(self) -> None:
        while True:
            await trio.sleep(POOL_REAP_INTERVAL_S)
            self.pools.reap(trio.current_time())


def _write_file(path: str, data: bytes) -> None:
    """Replace `path` with `data` whole: a reader never sees half of it."""
    staged = path + ".new"
    with open(staged, "wb") as f:
        f.write(data)
    os.replace(staged, path)


async def run_process(
    config_path: str,
    runtime: Runtime,
    limits: LimitRegistry,
    reuse_port: bool = False,
    metrics_file: str | None = None,
) -> None:
    """Serve with signal handling: SIGHUP reloads, SIGUSR1 reopens the access log,
    SIGTERM/SIGINT drain then return."""
    gateway = Gateway(
        config_path, runtime, limits, reuse_port=reuse_port, metrics_file=metrics_file
    )
    with trio.open_signal_receiver(*SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)

            async def watch_signals() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        await gateway.reload()
                    elif signum == signal.SIGUSR1:
                        gateway.reopen_logs()
                    else:
                        log.info("received %s, draining", signal.Signals(signum).name)
                        gateway.stop()
                        return

            nursery.start_soon(watch_signals)
