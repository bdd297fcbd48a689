#!/usr/bin/env python3
"""Ray's overhead at equal cores, measured: the same images captioned by

- ``blipq bench --threads 2`` (the CLI: one process, two threads),
- ``python -m blipq.bench --threads 2`` (the Python package: one process, two threads),
- ``python -m blipq.ray bench --actors 2 --threads-per-actor 1`` on a local Ray cluster of two
  single-CPU nodes (``ray start`` twice, python/tests/cluster.py),

in interleaved rounds, each timed end to end (process start, model load, warm-up and reports
included) and by its captioning alone; medians. It also checks that every run's captions equal
the CLI's. Prints a Markdown table; with ``--readme`` it replaces the table between the
``ray-scaling`` markers of that file.

    target/pyenv/bin/python tools/ray_scaling.py --model /tmp/blip-base-int8 \\
        --annotations data/demo-eval/captions.json --limit 80 --rounds 3 --readme README.md

Needs the ``blipq`` package and Ray installed in the running Python (``pip install .`` and
``pip install "ray[data]"``) and a release build of the CLI (``cargo build --release``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python" / "tests"))
from cluster import LocalCluster  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
from readme_block import replace_block  # noqa: E402



def timed(cmd: list) -> float:
    t = time.perf_counter()
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    took = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"ray_scaling: {' '.join(map(str, cmd))} failed:\n{r.stderr[-3000:]}")
    return took


def results(out: Path, label: str) -> dict:
    return json.loads((out / f"{label}_results.json").read_text())


def captioning_s(out: Path, label: str, workers: int) -> float:
    """Seconds of captioning proper: the summed per-image times (warm-up, model load and start
    excluded) over the workers that ran side by side."""
    return sum(s["timings"]["total_s"] for s in results(out, label)["samples"]) / workers


def ray_wall_s(out: Path) -> float:
    """The Ray driver's wall clock from submitting the dataset to the last result (actor start,
    model loads and warm-up included)."""
    return json.loads((out / "ray_run.json").read_text())["models"][0]["wall_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--annotations", default=str(REPO / "data/demo-eval/captions.json"))
    p.add_argument("--images")
    p.add_argument("--limit", type=int, default=80)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cli", default=str(REPO / "target/release/blipq"))
    p.add_argument("--readme")
    args = p.parse_args()
    model = Path(args.model)
    label = model.name
    data = ["--model", model, "--annotations", args.annotations, "--limit", str(args.limit)]
    if args.images:
        data += ["--images", args.images]
    work = Path(tempfile.mkdtemp(prefix="blipq-scaling-"))
    py = sys.executable
    configs = {
        "CLI, 1 process x 2 threads": lambda o: [args.cli, "bench", *data, "--threads", "2", "--out", o],
        "Python, 1 process x 2 threads": lambda o: [py, "-m", "blipq.bench", *data, "--threads", "2", "--out", o],
    }
    ray_name = "Ray, 2 nodes x 1 actor x 1 thread"
    e2e = {k: [] for k in [*configs, ray_name]}
    cap = {k: [] for k in [*configs, ray_name]}
    wall: list = []
    start = time.perf_counter()
    cluster_root = Path(tempfile.mkdtemp(prefix="blipq-ray-"))
    with LocalCluster(cluster_root, nodes=2, cpus_per_node=1) as c:
        cluster_up = time.perf_counter() - start
        configs[ray_name] = lambda o: [
            py, "-m", "blipq.ray", "bench", "--address", c.address, "--actors", "2",
            "--threads-per-actor", "1", *data, "--out", o,
        ]
        reference = None
        for r in range(args.rounds):
            for name, cmd in configs.items():
                out = work / f"{r}-{abs(hash(name))}"
                e2e[name].append(timed(cmd(out)))
                cap[name].append(captioning_s(out, label, 2 if name == ray_name else 1))
                if name == ray_name:
                    wall.append(ray_wall_s(out))
                ids = [s["token_ids"] for s in results(out, label)["samples"]]
                if reference is None:
                    reference = ids
                elif ids != reference:
                    sys.exit(f"ray_scaling: {name} captioned differently from the CLI")
                print(f"round {r + 1} {name}: {e2e[name][-1]:.2f} s end to end, "
                      f"{cap[name][-1]:.2f} s captioning", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(cluster_root, ignore_errors=True)
    n = args.limit
    base = "Python, 1 process x 2 threads"
    rows = [
        "| run (2 cores in all) | end to end: s | images/s | vs one Python process | "
        "captioning: s | images/s | vs one Python process |",
        "|---|---|---|---|---|---|---|",
    ]
    m = lambda d, k: statistics.median(d[k])
    for name in e2e:
        r_e2e, r_cap = m(e2e, name) / m(e2e, base), m(cap, name) / m(cap, base)
        rows.append(
            f"| {name} | {m(e2e, name):.2f} | {n / m(e2e, name):.2f} | {(r_e2e - 1) * 100:+.1f}% | "
            f"{m(cap, name):.2f} | {n / m(cap, name):.2f} | {(r_cap - 1) * 100:+.1f}% |"
        )
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    table = "\n".join(rows) + (
        f"\n\n{n} images of the bundled eval set, `{label}`, medians of {args.rounds} interleaved "
        f"rounds; {cpu}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}. Captions equal in "
        "every run. *End to end*: the whole command (process start, model load, warm-up, "
        "reports; for Ray also connecting and starting the actors, not the cluster). "
        "*Captioning*: the summed per-image times over the workers side by side (2 actors for "
        f"Ray). The Ray driver's wall clock from submitting the dataset to the last result: "
        f"{statistics.median(wall):.2f} s; starting the two-node cluster: {cluster_up:.1f} s "
        "(in neither column).\n"
    )
    print(table)
    if args.readme:
        replace_block(args.readme, "ray-scaling", table)


if __name__ == "__main__":
    main()
