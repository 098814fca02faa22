"""``gateway serve`` and ``gateway demo``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shlex
import shutil
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.cli.common import Context, cli_actor
from gateway.config import Config, RouteConfig, load_config
from gateway.kek import Keyring, create_keyring_file, load_keyring
from gateway.keys.lifecycle import KeyManager, NewKey
from gateway.store import open_store

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("serve", parents=[common], help="run the gateway")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes (default: server.workers)")
    p.set_defaults(run=_serve, needs_keyring=False, needs_store=False)
    p = sub.add_parser("demo", parents=[common],
                       help="run an echo upstream and the gateway, with a demo key")
    p.add_argument("--port", type=int, default=8080, help="the gateway's port (default 8080)")
    p.add_argument("--admin-port", type=int, default=9901,
                   help="the admin listener's port (default 9901)")
    p.set_defaults(run=_demo, needs_keyring=False, needs_store=False)


async def _serve(ctx: Context) -> int:
    def configured() -> Config:  # read again on SIGHUP
        config = load_config(ctx.args.config)
        if ctx.args.workers is not None:
            config = dataclasses.replace(config, server=dataclasses.replace(
                config.server, workers=ctx.args.workers))
        return config

    config = configured()
    # fail fast, in one line, on what would stop every worker: keyring and store
    load_keyring(config.kek.keyring)
    store = await open_store(config.store.url)
    await store.close()
    from gateway.proxy.server import serve

    # serve() runs its own event loops (uvloop, one per worker) once this one has ended
    ctx.args.then = lambda: serve(config, reload=configured)
    return 0


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response({
        "method": request.method, "target": request.raw_path,
        "headers": {k: v for k, v in request.headers.items()
                    if k.lower().startswith(("x-gateway-", "x-forwarded-", "x-request-id"))},
        "body_bytes": len(body)})


async def _demo(ctx: Context) -> int:
    data = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    upstream = web.Application()
    upstream.router.add_route("*", "/{tail:.*}", _echo)
    runner = web.AppRunner(upstream, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    upstream_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = load_config(None, env={})
    config = dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, listen=f"127.0.0.1:{ctx.args.port}"),
        admin=dataclasses.replace(base.admin, listen=f"127.0.0.1:{ctx.args.admin_port}"),
        store=dataclasses.replace(base.store, url=f"sqlite://{data / 'keys.db'}"),
        kek=dataclasses.replace(base.kek, keyring=str(data / "keyring.json")),
        log=dataclasses.replace(base.log, access_log=False),
        routes=(RouteConfig(prefix="/", upstream=f"http://127.0.0.1:{upstream_port}",
                            scopes={"*": "demo"}),),
    )
    create_keyring_file(config.kek.keyring, Keyring.generate(datetime.now(UTC)))
    store = await open_store(config.store.url)
    manager = KeyManager(store, load_keyring(config.kek.keyring), config.policy)
    issued = await manager.create(NewKey(principal="demo", name="demo key", scopes=("demo",),
                                         expiry=30 * 86400.0), actor=cli_actor(),
                                  now=datetime.now(UTC))
    await store.close()
    key_id, secret = issued.record.key_id, issued.secret.reveal()
    url = f"http://127.0.0.1:{ctx.args.port}/hello?name=world"
    print(f"""Gateway demo (data in {data}; stop with Ctrl-C)

  echo upstream   http://127.0.0.1:{upstream_port}
  gateway         http://127.0.0.1:{ctx.args.port}   (admin: {config.admin.listen})
  demo key        {key_id}

Try it:

  curl --aws-sigv4 "aws:amz:local:gateway" --user {shlex.quote(key_id + ':' + secret)} \\
       {shlex.quote(url)}

From Python (pip install requests):

  import requests
  from gateway.client import Credentials, RequestsAuth
  auth = RequestsAuth(Credentials({key_id!r}, {secret!r}))
  print(requests.get({url!r}, auth=auth).json())
""", flush=True)
    from gateway.proxy.server import Gateway

    store = await open_store(config.store.url)
    gateway = Gateway(config, store)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        await runner.cleanup()
        shutil.rmtree(data, ignore_errors=True)
        print("demo stopped", file=sys.stderr)
    return 0


