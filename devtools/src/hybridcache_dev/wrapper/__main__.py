"""`python -m hybridcache_dev.wrapper`: run the development Wrapper.

    python -m hybridcache_dev.wrapper --port 0 --redis-url redis://127.0.0.1:6390 \\
        --db /tmp/wrapper.db --token T --publish-mode pubsub --app crm

prints `DEVWRAPPER_READY http://127.0.0.1:<port>` on stdout when it serves.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from hybridcache_dev.wrapper.defaults import DEFAULT_APP, DEFAULT_TOKEN
from hybridcache_dev.wrapper.publisher import DEFAULT_STREAM_MAXLEN, PublishMode


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hybridcache_dev.wrapper", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port (printed in the READY line)")
    p.add_argument("--redis-url", default=None, help="where to publish; none: never publish")
    p.add_argument("--db", default=":memory:", help="SQLite file (seeded when empty) or :memory:")
    p.add_argument("--token", default=DEFAULT_TOKEN, help="the bearer token every request must carry")
    p.add_argument("--publish-mode", choices=[m.value for m in PublishMode], default=PublishMode.PUBSUB.value)
    p.add_argument("--app", default=DEFAULT_APP, help="the app part of channels and of the stream key")
    p.add_argument("--stream-maxlen", type=int, default=DEFAULT_STREAM_MAXLEN, help="approximate MAXLEN")
    p.add_argument("--scale", default=None, help="TENANTSxUSERSxOPS, e.g. 10x10000x200, instead of the demo")
    p.add_argument("--reseed", action="store_true", help="reload the seed even if the database has data")
    p.add_argument("--access-log", action="store_true")
    p.add_argument(
        "--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"]
    )
    p.add_argument("--api-shape", choices=["contract", "crm"], default="contract", help="crm: crm_routes.py")
    p.add_argument("--write-openapi", metavar="PATH", help="write the OpenAPI document to PATH and exit")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.write_openapi:
        from hybridcache_dev.wrapper.openapi import write_openapi  # noqa: PLC0415 (only here)

        write_openapi(args.write_openapi)
        return
    # Imported here so that --help and --write-openapi stay fast.
    from hybridcache_dev.wrapper.server import Scale, WrapperSettings, run  # noqa: PLC0415

    run(
        WrapperSettings(
            host=args.host,
            port=args.port,
            redis_url=args.redis_url,
            db_path=args.db,
            token=args.token,
            publish_mode=PublishMode(args.publish_mode),
            app_name=args.app,
            stream_maxlen=args.stream_maxlen,
            scale=Scale.parse(args.scale) if args.scale else None,
            reseed=args.reseed,
            access_log=args.access_log,
            log_level=args.log_level,
            api_shape=args.api_shape,
        )
    )


if __name__ == "__main__":
    main()
