"""Shared fixtures of the Python package's tests: the repository, the `blipq` CLI to compare
with (``BLIPQ_BIN``, else target/release/blipq, else target/debug/blipq), scratch folders, and a
real local Ray cluster of two single-CPU nodes (``cluster.py``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _cli() -> Path:
    env = os.environ.get("BLIPQ_BIN")
    if env:
        return Path(env).resolve()
    for profile in ("release", "debug"):
        p = REPO / "target" / profile / "blipq"
        if p.exists():
            return p
    pytest.fail("no blipq CLI to compare with: build it (cargo build) or set BLIPQ_BIN")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cli() -> Path:
    return _cli()


def run_cli(cli: Path, *args: object, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"blipq {args} failed ({r.returncode}):\n{r.stderr}")
    return r


def cli_captions(cli: Path, model: Path, images: list, *flags: str) -> list:
    """``blipq caption --json`` rows of ``images``."""
    r = run_cli(cli, "caption", "--json", *flags, "--model", model, *images)
    return json.loads(r.stdout)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local Ray cluster: a head and a second node joined to it, each ``ray start`` in a
    process of its own with one CPU. Yields it (``.address``, ``.tmp``: the nodes' TMPDIR);
    stops both nodes afterwards, always."""
    from cluster import LocalCluster

    # A short path: Ray's socket paths under it must fit in 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="blipq-ray-"))
    try:
        with LocalCluster(root, nodes=2, cpus_per_node=1) as c:
            yield c
    finally:
        shutil.rmtree(root, ignore_errors=True)
