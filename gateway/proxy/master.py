"""One master process for ``--workers N`` (DESIGN §8): it owns the listening socket —
a closing ``SO_REUSEPORT`` listener would drop the connections queued on it — forks
the workers, replaces any that die, and on SIGHUP re-reads the configuration and
restarts the workers without dropping a request: the new ones start and report ready
on the same socket before the old ones are told to drain and stop."""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
from collections.abc import Callable
from typing import Any

from ..config import Config, ConfigError, parse_listen

__all__ = ["Master"]

log = logging.getLogger("gateway")
READY_TIMEOUT = 30.0


class _Reload(Exception):
    """Raised by the SIGHUP handler to leave the blocking wait."""


class Master:
    def __init__(self, config: Config, reload: Callable[[], Config] | None,
                 run_worker: Callable[[Config, socket.socket, int], None]) -> None:
        self.config = config
        self._reload = reload
        self._run_worker = run_worker
        host, port = parse_listen(config.server.listen)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1024)
        self.sock.set_inheritable(True)
        self.workers: dict[int, int] = {}  # pid -> generation
        self.generation = 0
        self.stopping = False

    def _spawn(self) -> int:
        """Fork one worker of the current generation; the read end of its ready pipe."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            try:
                self._run_worker(self.config, self.sock, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        self.workers[pid] = self.generation
        return read_fd

    def _wait_ready(self, fds: list[int]) -> bool:
        pending = set(fds)
        while pending:
            ready, _, _ = select.select(list(pending), [], [], READY_TIMEOUT)
            if not ready:
                break
            for fd in ready:
                os.read(fd, 1)
                pending.discard(fd)
        for fd in fds:
            os.close(fd)
        return not pending

    def _restart(self) -> None:
        if self._reload is not None:
            try:
                self.config = self._reload()
            except ConfigError as exc:  # keep serving with what works
                log.error("reload refused, keeping the running configuration: %s", exc)
                return
        old = list(self.workers)
        self.generation += 1
        if not self._wait_ready([self._spawn() for _ in range(self.config.server.workers)]):
            log.error("new workers did not start in time; keeping the old ones as well")
            return
        for pid in old:  # they stop accepting, finish what they hold, and exit
            _kill(pid, signal.SIGTERM)

    def run(self) -> int:
        def stop(signum: int, _frame: Any) -> None:
            self.stopping = True
            for pid in self.workers:
                _kill(pid, signal.SIGTERM)

        def hup(signum: int, _frame: Any) -> None:
            raise _Reload()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, hup)
        self._wait_ready([self._spawn() for _ in range(self.config.server.workers)])
        while self.workers:
            try:
                pid, _status = os.wait()
            except _Reload:
                if not self.stopping:
                    self._restart()
                continue
            except ChildProcessError:
                break
            generation = self.workers.pop(pid, None)
            if generation == self.generation and not self.stopping:
                log.error("worker %d exited; starting another", pid)
                self._wait_ready([self._spawn()])
        return 0


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
