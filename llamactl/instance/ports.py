"""Backend ports: allocated from ``instances.port_range`` and checked free with the OS."""

from __future__ import annotations

import socket

from llamactl.instance.errors import InstanceConflict


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a backend could listen on ``port`` now.

    With SO_REUSEADDR, as the backends themselves bind: connections of a backend
    that just stopped linger in TIME_WAIT for a minute, and without it the
    port would look taken until they are gone.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class PortAllocator:
    """Hands out ports in an inclusive range; a port stays reserved until released."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self._reserved: set[int] = set()

    def claim(self, port: int, owner: str) -> int:
        """Reserve an explicit port for as long as its instance exists.

        Out of range or held by another instance is a conflict; whether another
        program holds it is checked when the instance starts.
        """
        if not self.low <= port <= self.high:
            raise InstanceConflict(
                f"port {port} of {owner} is outside instances.port_range [{self.low}-{self.high}]",
                field="port",
            )
        if port in self._reserved:
            raise InstanceConflict(
                f"port {port} of {owner} is already used by another instance", field="port"
            )
        self._reserved.add(port)
        return port

    def allocate(self, owner: str) -> int:
        for port in range(self.low, self.high + 1):
            if port not in self._reserved and port_is_free(port):
                self._reserved.add(port)
                return port
        raise InstanceConflict(
            f"no free port left in instances.port_range [{self.low}-{self.high}] for {owner}", field="port"
        )

    def release(self, port: int) -> None:
        self._reserved.discard(port)
