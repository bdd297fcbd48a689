"""``python -m blipq.ray`` on a real local Ray cluster (two ``ray start`` nodes of one CPU each,
see conftest.py) against the single-process CLI: the same reports, captions token for token and
metrics exactly; unreadable images recorded as the same failures; ``--ship`` for nodes that see
no shared files; ``caption`` equal to ``blipq caption --json``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli_captions, run_cli
from test_api import same_run

if os.environ.get("CI"):
    import ray  # noqa: F401  (in CI a missing or broken Ray fails, never skips)
else:
    pytest.importorskip("ray")


def ray_cli(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "blipq.ray", *map(str, args)], capture_output=True, text=True,
        timeout=600,
    )


def test_ray_bench_equals_the_cli(repo, cli, ray_cluster, scratch):
    common = [
        "--model", repo / "models/demo",
        "--model", repo / "models/demo-int8",
        "--annotations", repo / "data/demo-eval/captions.json",
        "--limit", "12",
    ]
    r = ray_cli("bench", "--address", ray_cluster.address, "--actors", "2", "--threads-per-actor", "1",
                *common, "--out", scratch / "ray")
    assert r.returncode == 0, r.stderr
    assert "12/12" in r.stderr  # the progress line
    run_cli(cli, "bench", *common, "--out", scratch / "cli")
    for label in ("demo", "demo-int8"):
        a = json.loads((scratch / "cli" / f"{label}_results.json").read_text())
        b = json.loads((scratch / "ray" / f"{label}_results.json").read_text())
        same_run(a, b)
        assert a["quality_metrics"]["Bleu_4"] > 0
        for f in (f"{label}_captions.json",):
            assert (scratch / "cli" / f).read_bytes() == (scratch / "ray" / f).read_bytes()
    # The comparison's quality rows are the same numbers.
    quality = lambda p: [l for l in p.read_text().splitlines() if l.startswith(("| BLEU", "| CIDEr", "| Token agreement", "| Vision"))]
    assert quality(scratch / "cli" / "comparison.md") == quality(scratch / "ray" / "comparison.md")
    for f in ("comparison.json", "size_vs_quality.svg", "speed_vs_quality.svg"):
        assert (scratch / "ray" / f).exists(), f
    run = json.loads((scratch / "ray" / "ray_run.json").read_text())
    assert run["nodes"] == 2 and run["cluster_cpus"] == 2 and run["actors"] == 2
    assert [m["images"] for m in run["models"]] == [12, 12]


def test_ray_failures_and_shipping(repo, cli, ray_cluster, scratch):
    """A folder with an unreadable image: the same failure as the CLI records, exit status 1;
    with --ship the actors get the checkpoint and images from the driver."""
    images = scratch / "images"
    images.mkdir()
    for n in ("scene_000001.png", "scene_000002.png", "scene_000003.png"):
        shutil.copy(repo / "data/demo-eval" / n, images / n)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    common = ["--model", repo / "models/demo-int8", "--images", images, "--warmup", "1"]
    r = ray_cli("bench", "--address", ray_cluster.address, "--ship", *common, "--out", scratch / "ray")
    assert r.returncode == 1, r.stderr
    assert "1 of 4 image runs failed" in r.stderr
    c = run_cli(cli, "bench", *common, "--out", scratch / "cli", check=False)
    assert c.returncode == 1, c.stderr
    a = json.loads((scratch / "cli" / "demo-int8_results.json").read_text())
    b = json.loads((scratch / "ray" / "demo-int8_results.json").read_text())
    same_run(a, b)
    assert [f["image"] for f in b["failures"]] == ["broken.png"]
    # The shipped checkpoint copies are gone once the actors have loaded them.
    assert not list(ray_cluster.tmp.glob("blipq-model-*"))


def test_ray_caption_equals_the_cli(repo, cli, ray_cluster, scratch):
    images = repo / "tests/fixtures/images"
    r = ray_cli("caption", "--address", ray_cluster.address, "--model", repo / "tests/fixtures/tiny",
                "--images", images, "--num-beams", "2", "--out", scratch / "c.json")
    assert r.returncode == 0, r.stderr
    ours = json.loads((scratch / "c.json").read_text())
    files = sorted(images.iterdir())
    theirs = cli_captions(cli, repo / "tests/fixtures/tiny", files, "--num-beams", "2")
    assert [(Path(o["image"]).name, o["token_ids"]) for o in ours] == [
        (Path(t["image"]).name, t["token_ids"]) for t in theirs
    ]


def test_ray_pool_must_fit_the_cluster(repo, ray_cluster):
    r = ray_cli("bench", "--address", ray_cluster.address, "--model", repo / "models/demo",
                "--images", repo / "data/demo-eval", "--limit", "2", "--threads-per-actor", "2")
    assert r.returncode == 2, r.stderr
    assert "do not fit in this cluster" in r.stderr, r.stderr


def test_ray_bad_arguments(repo, scratch):
    r = ray_cli("bench", "--model", scratch / "nowhere", "--images", repo / "data/demo-eval")
    assert r.returncode == 2 and "nowhere" in r.stderr
    r = ray_cli("bench", "--model", repo / "models/demo", "--images", repo / "data/demo-eval",
                "--actors", "0")
    assert r.returncode == 2 and "--actors" in r.stderr and "at least 1" in r.stderr
    r = ray_cli("bench", "--model", repo / "models/demo", "--annotations", scratch / "none.json")
    assert r.returncode == 2 and "none.json" in r.stderr
