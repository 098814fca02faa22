"""The processes a run measures, each on its own loopback port, and the CPU time of
each front process (``utime + stime`` from ``/proc/PID/stat``, the process and its
descendants: nginx's workers, the gateway's forked ``--workers``).

(a) ``direct``  the trivial upstream itself: nginx ``return 200`` (or bench/upstream.py)
(b) ``bare``    bench/bare_proxy.py, the idiomatic aiohttp proxy (DESIGN §9)
(c) ``nginx``   nginx ``proxy_pass`` with a keep-alive upstream pool;
    ``njs``     the same after an njs HMAC-SHA256 check of every request
(d) ``gateway`` ``gateway serve`` with access logging on
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .pool import HOST, NJS_KEY

__all__ = ["NJS_MODULE", "Target", "cpu_by_process", "cpu_seconds", "free_port", "have_nginx", "have_njs"]

ROOT = Path(__file__).resolve().parent.parent
NJS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def have_nginx() -> bool:
    return shutil.which("nginx") is not None


def have_njs() -> bool:
    return have_nginx() and NJS_MODULE.exists()


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo += [int(c) for c in children]
        except OSError:
            continue
    return out


def cpu_by_process(pid: int) -> dict[int, float]:
    """utime + stime of ``pid`` and of every live descendant, in seconds."""
    out = {}
    for p in _descendants(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[p] = (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15 of proc(5)
    return out


def cpu_seconds(pid: int) -> float:
    return sum(cpu_by_process(pid).values())


@dataclass
class Target:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    unique: bool = False  # needs uniquely signed requests (the gateway)
    info: dict[str, object] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def cpu_by_process(self) -> dict[int, float]:
        return cpu_by_process(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _spawn(name: str, argv: list[str], port: int, workdir: Path, *, unique: bool = False,
           stdout: Path | None = None, env: dict[str, str] | None = None,
           cwd: Path = ROOT) -> Target:
    log = workdir / f"{name}.log"
    with log.open("wb") as err, (stdout or Path(os.devnull)).open("wb") as out:
        # `python -m` puts the working directory first on sys.path: it picks the checkout
        proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return Target(name, port, proc, log, unique)
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not listen on {port}")


_NGINX_HEAD = """
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{modules}
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_max_body_size 4m;
    client_body_buffer_size 2m;
"""


def _nginx(name: str, workdir: Path, body: str, *, modules: str = "") -> Target:
    prefix = workdir / name
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_HEAD.format(prefix=prefix, modules=modules)
                    + body.format(port=port, prefix=prefix) + "\n}\n")
    return _spawn(name, ["nginx", "-p", str(prefix), "-c", str(conf)], port, workdir)


def start_direct(workdir: Path, kind: str) -> Target:
    """(a) the trivial upstream: nginx ``return 200`` (``kind="nginx"``) or bench/upstream.py."""
    if kind == "nginx":
        return _nginx("direct", workdir, """
    access_log off;
    server {{ listen 127.0.0.1:{port} default_server; location / {{ return 200 "ok\\n"; }} }}""")
    port = free_port()
    return _spawn("direct", [sys.executable, "-m", "bench.upstream", str(port)], port, workdir)


def start_bare(workdir: Path, upstream: str) -> Target:
    port = free_port()
    return _spawn("bare", [sys.executable, "-m", "bench.bare_proxy", str(port), upstream],
                  port, workdir)


_PROXY = """
    access_log {prefix}/access.log combined buffer=64k flush=1s;
    upstream up {{ server 127.0.0.1:%d; keepalive 64; }}
    %s
    server {{
        listen 127.0.0.1:{port} default_server;
        location / {{
            %s
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""

_NJS = """
function verify(r) {
    var nonce = r.headersIn['x-gateway-nonce'] || '';
    var mac = require('crypto').createHmac('sha256', '%s')
        .update(r.method + '\\n' + r.variables.request_uri + '\\n' + nonce).digest('hex');
    return mac === r.headersIn['x-bench-hmac'] ? '1' : '0';
}
export default {verify};
"""


def start_nginx_proxy(workdir: Path, upstream_port: int, *, njs: bool) -> Target:
    """(c) nginx ``proxy_pass``; with ``njs`` an HMAC-SHA256 check of every request first."""
    if not njs:
        return _nginx("nginx", workdir, _PROXY % (upstream_port, "", ""))
    script = workdir / "njs" / "hmac.js"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(_NJS % NJS_KEY.decode())
    return _nginx("njs", workdir, _PROXY % (
        upstream_port, f"js_import main from {script}; js_set $bench_ok main.verify;",
        'if ($bench_ok != "1") {{ return 401; }}'), modules=f"load_module {NJS_MODULE};")


def start_gateway(workdir: Path, name: str, upstream: str, *, store_url: str, keyring: Path,
                  replay: str, workers: int, cache_ttl: str, body_limit: int,
                  redis_url: str = "", src: Path = ROOT) -> Target:
    """(d) ``gateway serve``, imported from ``src`` (default: this checkout); its access
    log (stdout) goes to ``NAME.access.jsonl``. With ``redis_url``, the Redis tier is on
    (under a key prefix of its own)."""
    port, admin = free_port(), free_port()
    redis = (f'[redis]\nurl = "{redis_url}"\nprefix = "bench:{port}:"\n' if redis_url else "")
    config = workdir / f"{name}.toml"
    config.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
workers = {workers}
public_authority = "{HOST}"
[admin]
listen = "127.0.0.1:{admin}"
[store]
url = "{store_url}"
[kek]
keyring = "{keyring}"
[cache]
ttl = "{cache_ttl}"
[auth]
replay = "{replay}"
{redis}[log]
access_log = true

[[routes]]
prefix = "/api/"
upstream = "{upstream}"
max_body = {max(body_limit, 1024 * 1024) * 2}
""")
    access = workdir / f"{name}.access.jsonl"
    target = _spawn(name, [sys.executable, "-m", "gateway.cli", "serve", "--config",
                           str(config)], port, workdir, unique=True, stdout=access,
                    env={"PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"}, cwd=src)
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    target.info = {"config": config.read_text(), "access_log": str(access), "src": str(src),
                   "redis_prefix": f"bench:{port}:" if redis_url else None,
                   "commit": commit}
    return target
