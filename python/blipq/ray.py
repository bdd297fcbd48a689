"""``blipq bench`` and ``blipq caption`` spread over a Ray cluster (``python -m blipq.ray``).

The driver reads the items (as ``blipq bench`` does), makes a ``ray.data`` dataset of them, and
captions it with ``map_batches`` over a pool of actors (:class:`RayWorker`), each of which loads
the model once and runs ``blipq bench``'s loop on the items it is given. The driver gathers every
item's sample or failure and writes the same reports as ``blipq bench``, computed by the same
Rust code (:mod:`blipq.bench`), so a Ray run's captions and quality metrics equal a
single-process run's exactly; only the timings and memory differ.

Where the actors find the checkpoint and the images:

- by default, at the paths given: every node must see the same files there (a shared or
  replicated filesystem: NFS, a cloud disk, the same image baked on every machine);
- with ``--ship``, the driver reads the checkpoint folder and the images and ships them through
  Ray's object store; each actor writes the checkpoint to a temporary folder of its node, loads
  it and deletes the folder. Nothing needs to be shared, but every image passes through the
  driver, which reads them all before the run (the driver's memory and the object store hold
  the whole set: for large sets, share the files instead).

Relative paths are taken from the driver's working folder (actors change to it), so results
and error messages name files as ``blipq bench`` names them.

Every node needs the ``blipq`` package installed (the same wheel), and Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

from . import BlipqError, _blipq
from .bench import (
    CHUNK,
    Gathered,
    Items,
    Options,
    Progress,
    Worker,
    add_bench_arguments,
    check_models,
    count,
    finish,
    items,
    labels,
    options_of,
    results_of,
)

#: Largest checkpoint folder ``--ship`` sends through the object store.
MAX_SHIPPED_MODEL_BYTES = 8 << 30


def ship_model(model: str) -> Dict[str, bytes]:
    """The regular files of a checkpoint folder (not its subfolders), by name."""
    files: Dict[str, bytes] = {}
    total = 0
    for name in sorted(os.listdir(model)):
        path = os.path.join(model, name)
        if not os.path.isfile(path):
            continue
        total += os.path.getsize(path)
        if total > MAX_SHIPPED_MODEL_BYTES:
            raise ValueError(
                f"model {model}: over {MAX_SHIPPED_MODEL_BYTES >> 30} GiB of files to ship; "
                "put it on a filesystem every node sees instead"
            )
        with open(path, "rb") as f:
            files[name] = f.read()
    return files


class RayWorker:
    """A Ray Data actor: loads the model once (from the shared path, or from the shipped files
    written to a temporary folder of its node) and captions each batch of rows it is given.
    Returns one row per batch: the pieces (JSON), the actor's peak memory and the model info."""

    def __init__(
        self,
        model: str,
        options: dict,
        threads: Optional[int],
        images_dir: Optional[str],
        cwd: Optional[str] = None,
        shipped: Optional[List[Any]] = None,
    ) -> None:
        if shipped is not None:
            import ray

            files = ray.get(shipped[0])
            tmp = tempfile.mkdtemp(prefix="blipq-model-")
            try:
                for name, data in files.items():
                    with open(os.path.join(tmp, name), "wb") as f:
                        f.write(data)
                del files
                self.worker = Worker(tmp, Options(**options), threads)
            finally:
                # Loaded: the copy is not needed any more (Ray may kill the actor without
                # running any of its code, so it is not left for later).
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            # Relative paths as the driver gave them, from the same folder: the files are
            # shared, and errors then name them as blipq bench names them.
            if cwd and os.path.isdir(cwd):
                os.chdir(cwd)
            self.worker = Worker(model, Options(**options), threads)
        self.images_dir = images_dir

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, List[Any]]:
        indices = [int(i) for i in batch["index"]]
        chunk = [json.loads(t) for t in batch["item"]]
        image_bytes = None
        if "image" in batch:
            # Each shipped image: its bytes, or why the driver could not read it.
            image_bytes = [
                bytes(b) if len(e) == 0 else str(e) for b, e in zip(batch["image"], batch["error"])
            ]
        pieces, peak, info = self.worker.run(
            chunk,
            indices,
            images_dir=None if image_bytes is not None else self.images_dir,
            image_bytes=image_bytes,
        )
        import ray

        return {
            "pieces": [pieces],
            "peak_rss_mb": [float("nan") if peak is None else peak],
            "model_info": [info],
            "node": [ray.get_runtime_context().get_node_id()],
        }

def _rows(the_items: Items, ship: bool) -> List[Dict[str, Any]]:
    rows = []
    for i, item in enumerate(the_items.items):
        row: Dict[str, Any] = {"index": i, "item": json.dumps(item)}
        if ship:
            # An unreadable image is recorded as the item's failure, as blipq bench records it.
            try:
                path = os.path.join(the_items.images_dir, item["file"])
                row["image"], row["error"] = bytes(_blipq.read_image(path)), ""
            except BlipqError as e:
                row["image"], row["error"] = b"", str(e)
        rows.append(row)
    return rows


def caption_dataset(
    model: str,
    label: str,
    the_items: Items,
    options: Options,
    actors: int,
    threads_per_actor: int,
    ship: bool = False,
) -> Gathered:
    """Captions every item with ``model`` on a pool of ``actors`` actors of
    ``threads_per_actor`` CPUs each; returns what they sent back."""
    import ray

    size = max(CHUNK, options.batch_size)
    size -= size % options.batch_size
    shipped = [ray.put(ship_model(model))] if ship else None
    ds = ray.data.from_items(_rows(the_items, ship))
    ds = ds.map_batches(
        RayWorker,
        fn_constructor_kwargs=dict(
            model=os.fspath(model),
            options=options.__dict__.copy(),
            threads=threads_per_actor,
            images_dir=None if ship else the_items.images_dir,
            cwd=os.getcwd(),
            shipped=shipped,
        ),
        compute=ray.data.ActorPoolStrategy(size=actors),
        batch_size=size,
        num_cpus=threads_per_actor,
        batch_format="numpy",
    )
    gathered = Gathered()
    progress = Progress(label, len(the_items.items))
    start = time.monotonic()
    nodes = set()
    for row in ds.iter_rows():
        peak = row["peak_rss_mb"]
        progress.update(
            gathered.add(str(row["pieces"]), None if peak != peak else float(peak), str(row["model_info"]))
        )
        nodes.add(str(row["node"]))
    gathered.wall_s = time.monotonic() - start
    gathered.nodes = len(nodes)
    return gathered


def check_fits(actors: int, threads_per_actor: int) -> None:
    """Fails clearly when the cluster cannot hold the actor pool (Ray would wait for it)."""
    import ray

    cpus = [n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    per_node = sum(int(c // threads_per_actor) for c in cpus)
    if per_node < actors:
        raise ValueError(
            f"{actors} actors of {threads_per_actor} CPU(s) do not fit in this cluster: its "
            f"nodes have {', '.join(str(int(c)) for c in cpus) or 'no'} CPUs, room for "
            f"{per_node}; lower --actors or --threads-per-actor"
        )


def connect(address: Optional[str]) -> None:
    """Joins the cluster at ``address`` (``auto``: the one this machine belongs to; None: the
    one in ``RAY_ADDRESS``, else a new local one)."""
    import ray

    ray.init(
        address=address,
        logging_level="WARNING",
        log_to_driver=True,
        ignore_reinit_error=True,
    )
    ctx = ray.data.DataContext.get_current()
    # blipq's own progress line (per model) replaces Ray Data's per-operator bars.
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


def bench(args: argparse.Namespace) -> int:
    opts = options_of(args)
    opts.check()
    check_models(args.models)
    the_items = items(args.annotations, args.images, opts.limit)
    connect(args.address)
    check_fits(args.actors, args.threads_per_actor)
    import ray

    results, runs = [], []
    for model, label in zip(args.models, labels(args.models)):
        print(f"== {label}: {model}", file=sys.stderr)
        gathered = caption_dataset(
            model, label, the_items, opts, args.actors, args.threads_per_actor, args.ship
        )
        results.append(results_of(label, model, the_items, gathered, opts))
        n = gathered.done
        print(
            f"{label}: {n} images in {gathered.wall_s:.2f} s on {args.actors} actors of "
            f"{args.threads_per_actor} thread(s): {n / gathered.wall_s:.2f} images/s "
            "(wall clock, actor start and model loads included)",
            file=sys.stderr,
        )
        runs.append(dict(label=label, images=n, wall_s=gathered.wall_s, nodes_used=gathered.nodes))
    _, failed = finish(args.out, results, args.baselines)
    # The cluster-level figures blipq bench has no place for: the pool and its wall-clock time.
    run = dict(
        actors=args.actors,
        threads_per_actor=args.threads_per_actor,
        ship=args.ship,
        nodes=sum(1 for n in ray.nodes() if n.get("Alive")),
        cluster_cpus=ray.cluster_resources().get("CPU"),
        models=runs,
    )
    with open(os.path.join(args.out, "ray_run.json"), "w") as f:
        json.dump(run, f, indent=2)
    return 1 if failed else 0


def caption(args: argparse.Namespace) -> int:
    opts = Options(
        warmup=0,
        max_length=args.max_length,
        num_beams=args.num_beams,
        prompt=args.prompt,
        batch_size=args.batch_size,
    )
    opts.check()
    check_models([args.model])
    the_items = items(args.annotations, args.images, args.limit)
    connect(args.address)
    check_fits(args.actors, args.threads_per_actor)
    gathered = caption_dataset(
        args.model, labels([args.model])[0], the_items, opts, args.actors,
        args.threads_per_actor, args.ship,
    )
    pieces = sorted(
        (p for text in gathered.pieces for p in json.loads(text)), key=lambda p: p["index"]
    )
    rows = []
    for p in pieces:
        image = os.path.join(the_items.images_dir, the_items.items[p["index"]]["file"])
        if "sample" in p:
            s = p["sample"]
            rows.append(dict(image=image, caption=s["caption"], token_ids=s["token_ids"]))
        else:
            print(f"error: {p['failure']['error']}", file=sys.stderr)
            rows.append(dict(image=image, caption=None, token_ids=None, error=p["failure"]["error"]))
    text = json.dumps(rows, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
        print(f"wrote {len(rows)} captions to {args.out}", file=sys.stderr)
    else:
        print(text)
    if gathered.failed:
        print(f"{gathered.failed} of {len(rows)} images failed", file=sys.stderr)
        return 1
    return 0


def _cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address",
                   help="Ray cluster to join: auto (the one this machine is part of), "
                        "HOST:PORT, or ray://HOST:10001 (Ray Client); default: RAY_ADDRESS, "
                        "else a new local cluster")
    p.add_argument("--actors", type=count(1), default=2, help="actors in the pool (default: 2)")
    p.add_argument("--threads-per-actor", type=count(1), default=1,
                   help="CPUs each actor reserves and computes on (default: 1)")
    p.add_argument("--ship", action="store_true",
                   help="send the checkpoint and the images from the driver through Ray's "
                        "object store, for nodes that do not see the driver's files")


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m blipq.ray",
        description="blipq's benchmark and captioning over a Ray cluster (ray.data, a pool "
                    "of actors that each load the model once).",
    )
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="blipq bench over a Ray cluster: the same reports")
    add_bench_arguments(b)
    _cluster_arguments(b)
    c = sub.add_parser("caption", help="caption a folder (or an annotations file's images)")
    c.add_argument("--model", required=True, help="checkpoint folder")
    c.add_argument("--images", help="folder of images")
    c.add_argument("--annotations", help="COCO captions file naming the images")
    c.add_argument("--limit", type=count(1), help="the first N images only")
    c.add_argument("--out", help="write [{image, caption, token_ids}] here (default: stdout)")
    c.add_argument("--max-length", type=count(1))
    c.add_argument("--num-beams", type=count(1))
    c.add_argument("--prompt")
    c.add_argument("--batch-size", type=count(1), default=1)
    _cluster_arguments(c)
    args = p.parse_args(argv)
    try:
        return bench(args) if args.command == "bench" else caption(args)
    except (OSError, ValueError, RuntimeError, BlipqError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # Ray's own errors (an actor that died, a lost node), by name
        if type(e).__module__.startswith("ray"):
            print(f"error: the Ray cluster: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    # Run through the package's module, so that Ray pickles RayWorker by reference to it.
    from blipq.ray import main as _main

    sys.exit(_main())
