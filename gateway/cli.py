"""Command line: run the gateway, or check a config file like `nginx -t`.

gateway --config PATH            serve (server.workers processes)
gateway check --config PATH      validate only; also `gateway --config PATH --check`
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys

import trio

from gateway.config.load import load
from gateway.config.model import Config
from gateway.errors import ConfigErrors
from gateway.metrics import METRICS_FILE_ENV
from gateway.ratelimit import LimitRegistry
from gateway.runtime import compile_config

log = logging.getLogger("gateway")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="trio-gateway API gateway")
    parser.add_argument("command", nargs="?", choices=["run", "check", "hash-key"], default="run")
    parser.add_argument("--config", "-c", default="config.json", help="path to config.json")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def _summary(config: Config) -> str:
    return (
        f"{len(config.routes)} routes, {len(config.services)} services, "
        f"{len(config.plugin_configs)} plugin configs, {len(config.upstreams)} upstreams, "
        f"{len(config.consumers)} consumers, "
        f"{len(config.consumer_groups)} consumer groups, {len(config.global_rules)} global rules, "
        f"{sum(1 for ssl in config.ssls if ssl.status == 1)} certificates"
    )


def check(path: str) -> int:
    """`gateway check`: 0 and a summary when valid; 1 and one line per problem otherwise."""
    try:
        config = load(path)
        compile_config(config)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"{path}: {error}", file=sys.stderr)
        count = len(exc.errors)
        problems = "1 problem" if count == 1 else f"{count} problems"
        print(f"{path}: configuration is invalid ({problems})", file=sys.stderr)
        return 1
    print(f"{path}: configuration is valid: {_summary(config)}")
    return 0


def hash_key_command() -> int:
    """Read one key from stdin (trailing newline dropped) and print its `key_hash`."""
    from gateway.plugins.key_auth import hash_key

    key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        print("hash-key: expected a key on standard input", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def raise_fd_limit(max_connections: int) -> None:
    """Lift the soft open-files limit toward the hard one: each client connection can hold
    an upstream connection too (nginx's worker_rlimit_nofile does the same)."""
    wanted = 2 * max_connections + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "hash-key":
        return hash_key_command()
    if args.command == "check" or args.check:
        return check(args.config)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    limits = LimitRegistry()
    try:
        config = load(args.config)
        runtime = compile_config(config, limits=limits)
    except ConfigErrors as exc:
        for error in exc.errors:
            print(f"{args.config}: {error}", file=sys.stderr)
        return 1
    raise_fd_limit(config.server.limits.max_connections)
    if config.server.workers > 1 and not args.worker:
        from gateway.supervisor import Supervisor

        return trio.run(Supervisor(args.config, config.server.workers).run)
    from gateway.server import run_process

    failure: BaseExceptionGroup[OSError] | None = None
    try:
        # A worker shares its metrics through the file its supervisor names.
        metrics_file = os.environ.get(METRICS_FILE_ENV) if args.worker else None
        trio.run(run_process, args.config, runtime, limits, args.worker, metrics_file)
    except* OSError as group:  # raised inside the server's nurseries
        failure = group
    if failure is not None:
        for cause in _leaves(failure):
            log.error("cannot serve: %s", cause)
        return 1
    return 0


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions in a (nested) exception group, or the one exception."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
