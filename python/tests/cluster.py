"""A real Ray cluster on this machine, for tests and measurements: a head node started with
``ray start --head`` on 127.0.0.1 and more nodes joined with ``ray start --address``, each in a
process (and process session) of its own with a fixed CPU count, every port its own (free ports
picked at start, so it runs beside other clusters). Stopping kills exactly these sessions (never
another cluster of the machine, as ``ray stop`` would), gently, then by force. ``tmp`` is the
nodes' ``TMPDIR`` (where actors put temporary files).

    with LocalCluster(Path("/tmp/x"), nodes=2, cpus_per_node=1) as c:
        subprocess.run([..., "--address", c.address])
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

# No usage reports, and the "disabled" notice Ray still sends goes to loopback.
RAY_ENV = {
    "RAY_DISABLE_USAGE_STATS": "1",
    "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
}


# Worker ports: each node gets a block of 1000 in 20000-31999, below Linux's default ephemeral
# range (32768-60999), where the free ports below come from.
WORKER_PORTS = range(20000, 32000)


def _free_port() -> int:
    """A free port outside ``WORKER_PORTS`` (a component port inside a node's worker block makes
    Ray refuse to start the node)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in WORKER_PORTS:
            return port


def _sessions_members(sids: List[int]) -> List[int]:
    """Processes whose session is one of ``sids`` (Linux /proc)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # After the command: state, ppid, pgrp, session, ... (a zombie is already dead)
        if len(fields) > 3 and fields[0] != "Z" and int(fields[3]) in sids:
            out.append(int(d))
    return out


class LocalCluster:
    def __init__(
        self,
        root: Path,
        nodes: int = 2,
        cpus_per_node: int = 1,
        object_store_bytes: int = 100_000_000,
        ray: Optional[str] = None,
    ) -> None:
        self.root = Path(root)
        self.nodes = nodes
        self.cpus = cpus_per_node
        self.store = object_store_bytes
        self.ray = ray or str(Path(sys.executable).parent / "ray")
        self.procs: List[subprocess.Popen] = []
        self.logs_open: list = []
        self.address = ""
        self.tmp = self.root / "tmp"

    def _start(self, args: List[str], log: str) -> None:
        env = dict(os.environ, **RAY_ENV, TMPDIR=str(self.tmp))
        # Every port a node listens on: free ones, not Ray's fixed defaults.
        ports = [
            f"--{name}={_free_port()}"
            for name in (
                "node-manager-port",
                "object-manager-port",
                "metrics-export-port",
                "dashboard-agent-listen-port",
                "dashboard-agent-grpc-port",
                "runtime-env-agent-port",
            )
        ]
        out = open(self.root / log, "w")
        self.logs_open.append(out)
        p = subprocess.Popen(
            [self.ray, "start", "--block", *ports, *args],
            env=env,
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(p)

    def _wait_for_nodes(self, n: int, timeout: float = 90.0) -> None:
        code = (
            "import ray, sys, time\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR')\n"
            f"end = time.time() + {timeout}\n"
            f"while sum(1 for x in ray.nodes() if x['Alive']) < {n}:\n"
            "    if time.time() > end: sys.exit('timed out')\n"
            "    time.sleep(0.2)\n"
        )
        checker = subprocess.Popen(
            [sys.executable, "-c", code],
            env=dict(os.environ, **RAY_ENV),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        end = time.time() + timeout + 30
        while checker.poll() is None:
            # A node that exits (a bad flag, a busy port) fails the start at once.
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.time() > end:
                checker.kill()
                checker.wait()
                why = "a node exited" if dead else "timed out"
                raise RuntimeError(f"the Ray cluster did not come up ({why}):\n{self.logs()}")
            time.sleep(0.2)
        if checker.returncode != 0:
            _, err = checker.communicate()
            raise RuntimeError(f"the Ray cluster did not come up: {err[-2000:]}\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for f in sorted(self.root.glob("*.log")):
            out.append(f"--- {f.name}\n{f.read_text()[-2000:]}")
        return "\n".join(out)

    def __enter__(self) -> "LocalCluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        port = _free_port()
        # Worker ports: a block of 1000 per node, somewhere in WORKER_PORTS.
        blocks = len(WORKER_PORTS) // 1000
        first = WORKER_PORTS.start + 1000 * (os.getpid() % (blocks - self.nodes + 1))
        self.address = f"127.0.0.1:{port}"
        common = [
            f"--num-cpus={self.cpus}",
            "--disable-usage-stats",
            f"--object-store-memory={self.store}",
        ]
        try:
            self._start(
                [
                    "--head",
                    "--node-ip-address=127.0.0.1",
                    f"--port={port}",
                    "--include-dashboard=false",
                    f"--temp-dir={self.root / 'ray'}",
                    f"--min-worker-port={first}",
                    f"--max-worker-port={first + 999}",
                    *common,
                ],
                "head.log",
            )
            self._wait_for_nodes(1)
            for i in range(1, self.nodes):
                base = first + 1000 * i
                self._start(
                    [
                        f"--address={self.address}",
                        f"--min-worker-port={base}",
                        f"--max-worker-port={base + 999}",
                        *common,
                    ],
                    f"node{i}.log",
                )
            self._wait_for_nodes(self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops every process of the nodes' sessions (Ray's workers included, which run in
        process groups of their own): SIGTERM, up to 3 s to exit (``ray start --block`` and the
        GCS server wait for nothing, so they are killed after it), then SIGKILL."""
        sids = [p.pid for p in self.procs]

        def signal_all(sig: int) -> None:
            for pid in _sessions_members(sids):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

        signal_all(signal.SIGTERM)
        end = time.time() + 3
        while time.time() < end and _sessions_members(sids):
            for p in self.procs:
                p.poll()
            time.sleep(0.2)
        signal_all(signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        end = time.time() + 10
        while time.time() < end and _sessions_members(sids):
            time.sleep(0.2)
        self.procs = []
        for f in self.logs_open:
            f.close()
        self.logs_open = []

    def __exit__(self, *exc: object) -> None:
        self.stop()
