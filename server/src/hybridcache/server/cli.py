"""`hybridcache` command line: `serve` (the service), `health`, `stats`, `watch`, `wrapper-check`
(a Wrapper against its mapping); `dev` (the whole dev stack) and `bench` when
hybridcache-devtools is installed (its entry points)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

from hybridcache.server.config import ConfigError, config_warnings, load_settings, unknown_variables
from hybridcache.server.ops.workers import WORKER_ENV

log = logging.getLogger("hybridcache")

# The service's distribution on the package index (its import package is hybridcache.server).
DISTRIBUTION = "hybridcache-server"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


# Subcommands the tooling distribution provides: name -> what it does.
DEV_COMMANDS = {
    "dev": "run Redis, the development Wrapper and the server together",
    "bench": "the benchmark suite (docs/BENCHMARKS.md)",
}
DEV_COMMANDS_GROUP = "hybridcache.commands"  # the entry-point group hybridcache-devtools declares
DEVTOOLS = "hybridcache-devtools"


def _dev_command(name: str, argv: list[str]) -> int:
    """Run `name` from hybridcache-devtools, or say how to get it (exit 2)."""
    from importlib.metadata import entry_points  # noqa: PLC0415

    found = entry_points(group=DEV_COMMANDS_GROUP, name=name)
    if not found:
        print(
            f"hybridcache {name}: this is development tooling, not part of the service: "
            f"install {DEVTOOLS} (scripts/bootstrap does, from devtools/)",
            file=sys.stderr,
        )
        return 2
    command: Callable[[list[str]], int] = next(iter(found)).load()
    return command(argv)


def serve(workers: int | None = None) -> int:
    """Run the server until SIGTERM / SIGINT; then shut down gracefully and exit 0.

    `workers` (or HYBRIDCACHE_WORKERS) above 1: supervise that many worker processes
    sharing the port instead (`hybridcache.server.ops.workers`).
    """
    if workers is not None:
        os.environ["HYBRIDCACHE_WORKERS"] = str(workers)
    try:
        settings = load_settings()
    except ConfigError as exc:
        for line in unknown_variables(os.environ):  # a misspelt name may be why a value is missing
            print(f"hybridcache: warning: {line}", file=sys.stderr)
        print(f"hybridcache: configuration error: {exc}", file=sys.stderr)
        return 2
    if settings.workers > 1 and WORKER_ENV not in os.environ:
        if settings.port == 0:
            print(
                "hybridcache: configuration error: HYBRIDCACHE_WORKERS > 1 needs a fixed HYBRIDCACHE_PORT",
                file=sys.stderr,
            )
            return 2
        from hybridcache.server.ops.workers import supervise  # noqa: PLC0415

        return supervise(settings)
    from hybridcache.server.app import create_service  # noqa: PLC0415 (config errors first, fast)
    from hybridcache.server.ops.logs import configure_logging  # noqa: PLC0415

    configure_logging(settings.log_format, settings.log_level, flush_interval_s=settings.log_flush_interval_s)
    if os.environ.get(WORKER_ENV, "0") == "0":  # said once, not by every worker
        for line in config_warnings(settings, os.environ):
            log.warning(line)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = create_service(settings)
    log.info("listening", extra={"port": service.port})
    stop.wait()
    service.stop()
    log.info("stopped")
    return 0


def health(
    target: str | None,
    *,
    ca_file: str | None = None,
    server_name: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> int:
    """One grpc.health.v1 Check (container HEALTHCHECK): exit 0 when SERVING, 1 otherwise.

    It reads the server's own HYBRIDCACHE_* settings, so in the server's container it needs
    no options: the port, and with HYBRIDCACHE_TLS_CERT_FILE set it speaks TLS (see
    hybridcache.server.ops.health_check for which certificates it trusts and presents).
    """
    from hybridcache.server.ops.health_check import HealthTLS, check_health  # noqa: PLC0415

    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"hybridcache health: configuration error: {exc}", file=sys.stderr)
        return 1
    if target is None:
        host = settings.host if settings.host not in ("", "0.0.0.0", "::", "[::]") else "127.0.0.1"
        target = f"{host}:{settings.port}"
    tls = HealthTLS.for_server(
        settings, ca_file=ca_file, server_name=server_name, client_cert=client_cert, client_key=client_key
    )
    ok, message = check_health(target, tls)
    print(f"hybridcache health: {target}: {message}", file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hybridcache", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser(
        "serve", help="run the gRPC server (configured by HYBRIDCACHE_* variables)"
    )
    serve_cmd.add_argument(
        "--workers", type=int, default=None, help="worker processes sharing the port (HYBRIDCACHE_WORKERS)"
    )
    # `dev` and `bench` are tooling, shipped apart in hybridcache-devtools (devtools/): they
    # are found through its entry points and parse their own options.
    for name, what in DEV_COMMANDS.items():
        commands.add_parser(name, help=f"{what} (from hybridcache-devtools; hybridcache {name} --help)")
    check = commands.add_parser("health", help="check a running server's health (exit 0 when SERVING)")
    check.add_argument("--target", default=None, help="host:port (default 127.0.0.1:$HYBRIDCACHE_PORT)")
    # With TLS on (HYBRIDCACHE_TLS_CERT_FILE) the defaults suit the server's own container.
    check.add_argument("--tls-ca", default=None, help="CA to verify the server (default: its certificate)")
    check.add_argument("--tls-server-name", default=None, help="name to verify (default: the certificate's)")
    check.add_argument("--tls-cert", default=None, help="mTLS client certificate (default: the server's)")
    check.add_argument("--tls-key", default=None, help="mTLS client key (default: the server's)")
    from hybridcache.server.ops import cli as opscli  # noqa: PLC0415 (the operator's `stats` and `watch`)

    opscli.register(commands)
    from hybridcache.server.wrapper import check as wrapper_check  # noqa: PLC0415

    wrapper_check.register(commands)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in DEV_COMMANDS:
        return _dev_command(argv[0], argv[1:])
    args = parser.parse_args(argv)
    code = wrapper_check.run(args) if args.command == "wrapper-check" else opscli.run(args)
    if code is not None:
        return code
    if args.command == "serve":
        return serve(args.workers)
    if args.command == "health":
        return health(
            args.target,
            ca_file=args.tls_ca,
            server_name=args.tls_server_name,
            client_cert=args.tls_cert,
            client_key=args.tls_key,
        )
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
