"""An SSH remote forward (`ssh -R`) with our own relay: the node connects to 127.0.0.1:PORT on its side
and reaches a local service (the registry) here.

Fabric's forward_remote relays 1 KiB per read, which made cold pulls twice as slow and 11 % bigger on the
wire (TESTBED F); this relays 64 KiB per read and counts the bytes sent to the node.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

import paramiko

CHUNK = 64 * 1024


class RemoteForward:
    def __init__(self, transport: paramiko.Transport, remote_port: int, local_port: int, local_host: str = "127.0.0.1"):
        self.transport = transport
        self.remote_port = remote_port
        self.local = (local_host, local_port)
        self.bytes_to_node = 0
        self.bytes_from_node = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    def __enter__(self) -> RemoteForward:
        try:
            self.transport.request_port_forward("127.0.0.1", self.remote_port, handler=self._accept)
        except paramiko.SSHException as e:
            raise OSError(
                f"the node refused to listen on 127.0.0.1:{self.remote_port} for the image registry "
                f"({e}); is another deploy shipping to it, or is the port taken there?"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.transport.cancel_port_forward("127.0.0.1", self.remote_port)
        for t in self._threads:
            t.join(timeout=5)

    def _accept(self, channel: paramiko.Channel, origin: tuple[str, int], server: tuple[str, int]) -> None:
        # Called on paramiko's transport thread: hand the connection to a relay thread at once.
        t = threading.Thread(target=self._relay, args=(channel,), daemon=True)
        self._threads.append(t)
        t.start()

    def _relay(self, channel: paramiko.Channel) -> None:
        try:
            sock = socket.create_connection(self.local, timeout=10)
        except OSError:
            channel.close()
            return
        sock.settimeout(None)
        try:
            directions = ((sock, channel, "bytes_to_node"), (channel, sock, "bytes_from_node"))
            while not self._stop.is_set():
                readable, _, _ = select.select([sock, channel], [], [], 0.5)  # type: ignore[type-var]
                for src, dst, counter in directions:
                    if src not in readable:
                        continue
                    data = src.recv(CHUNK)
                    if not data:
                        return
                    dst.sendall(data)
                    with self._lock:
                        setattr(self, counter, getattr(self, counter) + len(data))
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            channel.close()
