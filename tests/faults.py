"""Faults the reliability tests inject: a network link that goes silent, a small disk that fills up."""

import contextlib
import os
import socket
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path


class SilentLink:
    """A TCP proxy on 127.0.0.1 in front of a server, whose link can go silent without closing anything."""

    def __init__(self, host: str, port: int) -> None:
        self.host = "127.0.0.1"
        self._target = (host, port)
        self._listener = socket.create_server((self.host, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def __enter__(self) -> "SilentLink":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def pause(self) -> None:
        """Forward nothing more either way and act on nothing, a closed connection included: a pulled cable."""
        self._forwarding.clear()

    def resume(self) -> None:
        """The link is back. The connections that lived through the silence are reset, as they would be by then."""
        self._reset()
        self._forwarding.set()

    def close(self) -> None:
        """Reset every connection and stop listening."""
        self._closed.set()
        self._reset()
        self._forwarding.set()
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _spawn(self, target: Callable[..., None], *args: socket.socket) -> None:
        thread = threading.Thread(target=target, args=args, name="silent-link", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _keep(self, sock: socket.socket) -> None:
        sock.settimeout(None)
        with self._lock:
            self._sockets.append(sock)

    def _reset(self) -> None:
        with self._lock:
            stale, self._sockets = self._sockets, []
        for sock in stale:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv(), which close() would not
            sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            self._keep(client)
            if not self._forwarding.is_set():
                continue  # the kernel completed the handshake during the silence; resume() resets it
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.shutdown(socket.SHUT_RDWR)
                continue
            self._keep(server)
            self._spawn(self._pipe, client, server)
            self._spawn(self._pipe, server, client)

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                self._forwarding.wait()
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass  # reset by resume() or close(), or by the other end
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def mount_tmpfs(path: Path, size: int) -> None:
    """Mount a tmpfs of ``size`` bytes on the folder ``path``; raises OSError or CalledProcessError (not root)."""
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )


def unmount(path: Path) -> None:
    """Detach the file system mounted on ``path``, even while files on it are still open."""
    subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True)


def used_bytes(folder: Path) -> int:
    """The sizes of the regular files under ``folder``, added up (files deleted meanwhile count for nothing)."""
    total = 0
    for root, _, names in os.walk(folder):  # os.walk passes over folders removed while it walks
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                info = os.lstat(os.path.join(root, name))
                total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total
