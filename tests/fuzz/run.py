"""atheris fuzz targets for the parsers that face clients (see README.md here)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import atheris

with atheris.instrument_imports():
    from gateway.config import ConfigError, load_config
    from gateway.errors import GatewayError
    from gateway.proxy.routes import check_target
    from gateway.signing import Body, Policy, Request, parse
    from gateway.signing.sfv import SFVError, parse_dictionary

HERE = Path(__file__).resolve().parent
POLICY = Policy()
NOW = 1_800_000_000


def _text(data: bytes) -> str:
    # what aiohttp hands over: UTF-8, undecodable bytes as surrogate escapes
    return data.decode("utf-8", "surrogateescape")


def signing(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    names = ["Authorization", "X-Amz-Date", "Signature-Input", "Signature", "Content-Digest",
             "Host", "X-Amz-Content-Sha256", "Content-Encoding"]
    headers = [(fdp.PickValueInList(names), _text(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))))
               for _ in range(fdp.ConsumeIntInRange(0, 6))]
    target = "/" + _text(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)))
    body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
    try:
        parse(Request("POST", target, tuple(headers)), POLICY, NOW).verify(b"s", Body(body))
    except GatewayError:
        pass


def sfv(data: bytes) -> None:
    try:
        parse_dictionary(_text(data))
    except SFVError:
        pass


def target(data: bytes) -> None:
    try:
        check_target(_text(data))
    except GatewayError:
        pass


def config(data: bytes) -> None:
    path = HERE / ".fuzz-config.toml"
    path.write_bytes(data)
    try:
        load_config(path, env={})
    except ConfigError:
        pass


TARGETS = {"signing": signing, "sfv": sfv, "target": target, "config": config}


def main() -> None:
    name, seconds = sys.argv[1], int(sys.argv[2])
    if name == "all":  # atheris.Fuzz() ends its process: one process per target
        for each in TARGETS:
            started = time.monotonic()
            print(f"== {each}: {seconds} s", flush=True)
            subprocess.run([sys.executable, __file__, each, str(seconds)], check=False)
            print(f"== {each} done in {time.monotonic() - started:.0f} s", flush=True)
        return
    work = HERE / ".work" / name  # new inputs land here; the committed seeds stay as they are
    work.mkdir(parents=True, exist_ok=True)
    atheris.Setup([sys.argv[0], str(work), str(HERE / "corpus" / name),
                   f"-max_total_time={seconds}", "-print_final_stats=1"], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
