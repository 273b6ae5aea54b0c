"""A StatsD server stand-in for tests: a UDP socket on loopback that keeps every packet."""
from __future__ import annotations

import socket
import threading


class UdpSink:
    """A StatsD server stand-in: collects every packet sent to its port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except OSError:
                continue
            self.lines.extend(line for line in data.decode(errors="replace").splitlines() if line)

    def names(self) -> set[str]:
        return {line.split(":", 1)[0] for line in list(self.lines)}

    def values(self, name: str) -> list[tuple[float, str]]:
        out = []
        for line in list(self.lines):
            stat, _, rest = line.partition(":")
            if stat == name:
                value, _, kind = rest.partition("|")
                out.append((float(value), kind.split("|")[0]))
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def clear(self) -> None:
        self.lines.clear()

    def env(self) -> dict[str, str]:
        """Airflow settings that send its StatsD metrics here."""
        return {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                "AIRFLOW__METRICS__STATSD_PORT": str(self.port)}
