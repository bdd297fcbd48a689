"""``blipq bench`` from Python: the same benchmark, reports and exit status, computed by the same
Rust code, with the captioning done by *workers* that each load a model once.

- ``python -m blipq.bench`` runs each model in a fresh worker process on this machine (as the
  CLI does, so that each model's peak memory is measured apart; it includes the Python
  interpreter's own, some 30 MB).
- ``python -m blipq.ray bench`` (``blipq.ray``) runs the workers as a pool of Ray actors.

How the pieces fit: the driver reads the items (:func:`items`), hands lists of items to workers
(:class:`Worker`: ``Captioner.bench_run`` is the loop of ``blipq bench``, warm-up included),
gathers their *pieces* (each item's sample or failure, tagged with its index), and
:func:`finish` assembles each model's results JSON in item order and writes the report folder:
``<label>_results.json``, ``<label>_captions.json``, ``comparison.md``, ``comparison.json`` and
the trade-off charts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import Captioner, _blipq


@dataclass
class Options:
    """``blipq bench``'s options (the same names and defaults; the models have no default
    here, where the CLI's are the bundled demo)."""

    warmup: int = 3
    limit: Optional[int] = None
    max_length: Optional[int] = None
    num_beams: Optional[int] = None
    prompt: Optional[str] = None
    fixed_new_tokens: Optional[int] = None
    batch_size: int = 1

    def caption_options(self) -> Dict[str, Any]:
        """The engine's caption options (every key; None: the checkpoint's default)."""
        return dict(
            prompt=self.prompt,
            max_length=self.max_length,
            max_new_tokens=None,
            min_length=None,
            num_beams=self.num_beams,
            fixed_new_tokens=self.fixed_new_tokens,
        )

    def check(self) -> None:
        if not 0 <= self.warmup <= 100:
            raise ValueError(f"warmup {self.warmup}: give at most 100 untimed captions")
        if not 1 <= self.batch_size <= 32:
            raise ValueError(f"batch_size {self.batch_size}: give 1 to 32 images per batch")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit {self.limit}: give at least 1 image")


@dataclass
class Items:
    """The benchmark's items (``[{"file", "image_id", "references"}]``) and their image folder."""

    items: List[dict]
    images_dir: str

    def json(self) -> str:
        return json.dumps(self.items)


def items(
    annotations: Optional[str] = None, images: Optional[str] = None, limit: Optional[int] = None
) -> Items:
    """The items of a COCO annotations file and/or an image folder, as ``blipq bench`` reads
    them."""
    text, folder = _blipq.bench_items(annotations, images, limit)
    return Items(json.loads(text), os.fspath(folder))


class Worker:
    """One worker: a model loaded once, captioning lists of items; its first list is preceded by
    ``options.warmup`` untimed captions (as ``blipq bench`` warms each model up once)."""

    def __init__(self, model: str, options: Options, threads: Optional[int] = None) -> None:
        self.model = Captioner.load(model, threads=threads)
        self.options = options
        self.warm = False
        # Read now: the checkpoint's files may be gone later (a shipped copy is deleted).
        self.info = self.model._native.report_info()

    def run(
        self,
        items: Sequence[dict],
        indices: Sequence[int],
        images_dir: Optional[str] = None,
        image_bytes: Optional[Sequence[Union[bytes, str]]] = None,
    ) -> Tuple[str, Optional[float], str]:
        """Captions ``items`` (items ``indices`` of the whole list), reading their images from
        ``images_dir`` or taking ``image_bytes`` (each image's bytes, or why it is missing). Returns the pieces (JSON), this process's
        peak memory in MB and the model's ``model_info`` (JSON)."""
        warmup = 0 if self.warm else self.options.warmup
        self.warm = True
        pieces = self.model._native.bench_run(
            json.dumps(list(items)),
            [int(i) for i in indices],
            images_dir=images_dir,
            image_bytes=None if image_bytes is None else list(image_bytes),
            warmup=warmup,
            batch_size=self.options.batch_size,
            options=self.options.caption_options(),
        )
        return pieces, _blipq.peak_rss_mb(), self.info


@dataclass
class Gathered:
    """What the workers sent back for one model."""

    pieces: List[str] = field(default_factory=list)
    peak_memory_mb: Optional[float] = None
    model_info: Optional[str] = None
    done: int = 0
    failed: int = 0
    #: Wall-clock seconds from submitting the work to the last reply.
    wall_s: float = 0.0
    #: How many machines (Ray nodes) the replies came from.
    nodes: int = 1

    def add(self, pieces: str, peak_memory_mb: Optional[float], model_info: str) -> int:
        """Adds one worker reply; returns how many items it covered."""
        self.pieces.append(pieces)
        parsed = json.loads(pieces)
        self.failed += sum(1 for p in parsed if "failure" in p)
        self.done += len(parsed)
        if peak_memory_mb is not None and peak_memory_mb == peak_memory_mb:  # not NaN
            # Each worker is a process of its own: the model's peak is the largest of theirs.
            self.peak_memory_mb = max(self.peak_memory_mb or 0.0, float(peak_memory_mb))
        self.model_info = self.model_info or model_info
        return len(parsed)


class Progress:
    """``label [====    ] done/total elapsed images/s`` on stderr: rewritten in place on a
    terminal, else a line at every tenth."""

    def __init__(self, label: str, total: int, stream: Any = None) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self.done = 0
        self.next_line = max(1, total // 10)

    def update(self, n: int) -> None:
        self.done += n
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        width = 30
        filled = int(width * self.done / max(1, self.total))
        line = (
            f"{self.label} [{'=' * filled}{' ' * (width - filled)}] {self.done}/{self.total} "
            f"{elapsed:.1f}s {rate:.2f} images/s"
        )
        if self.tty:
            self.stream.write("\r" + line)
            if self.done >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif self.done >= self.next_line or self.done >= self.total:
            print(line, file=self.stream)
            self.next_line = self.done + max(1, self.total // 10)


def labels(models: Sequence[str]) -> List[str]:
    """``blipq bench``'s label of each model: its folder name, made unique."""
    return list(_blipq.bench_labels([os.fspath(m) for m in models]))


def check_models(models: Sequence[str]) -> None:
    if not models:
        raise ValueError("give at least one --model")
    for m in models:
        if not os.path.isdir(m):
            raise FileNotFoundError(f"model {m}: not a checkpoint directory")


def results_of(
    label: str, model: str, the_items: Items, gathered: Gathered, options: Options
) -> str:
    """One model's results JSON (text) from what its workers sent back; ``model`` is the path
    the user gave (workers may have loaded it from elsewhere: an absolute path, a shipped copy)."""
    if gathered.model_info is None:
        raise RuntimeError(f"{label}: no worker reported back")
    info = json.loads(gathered.model_info)
    info["model_path"] = os.fspath(model)
    return _blipq.bench_results(
        label,
        the_items.json(),
        gathered.pieces,
        options.batch_size,
        gathered.peak_memory_mb,
        json.dumps(info),
    )


def finish(out: str, results: List[str], baselines: Sequence[str] = ()) -> Tuple[str, int]:
    """Writes the report folder ``out`` and prints the comparison table; returns the table and
    the number of failed image runs (as ``blipq bench``, which then exits with status 1)."""
    table = _blipq.bench_reports(os.fspath(out), results, [os.fspath(b) for b in baselines])
    print(table)
    failed = sum(json.loads(r)["performance_metrics"]["failed_samples"] for r in results)
    print(f"reports written to {out}", file=sys.stderr)
    if failed:
        total = sum(
            json.loads(r)["performance_metrics"]["failed_samples"]
            + json.loads(r)["performance_metrics"]["total_samples"]
            for r in results
        )
        print(
            f"error: {failed} of {total} image runs failed; see `failures` in the results JSON",
            file=sys.stderr,
        )
    return table, failed


def chunks(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


#: Items per request to a worker: small enough for a live progress line and an even spread
#: over workers, large enough that the hand-off costs nothing next to the captions.
CHUNK = 8

_WORKER: Optional[Worker] = None


def _start_worker(model: str, options: dict, threads: Optional[int]) -> None:
    """Loads the model of this worker process (``python -m blipq.bench``)."""
    global _WORKER
    _WORKER = Worker(model, Options(**options), threads)


def _run_chunk(
    chunk: List[dict], indices: List[int], images_dir: str
) -> Tuple[str, Optional[float], str]:
    assert _WORKER is not None, "the worker process has no model"
    return _WORKER.run(chunk, indices, images_dir=images_dir)


def run_local(
    models: Sequence[str],
    the_items: Items,
    options: Options,
    out: str,
    threads: Optional[int] = None,
    baselines: Sequence[str] = (),
) -> int:
    """The benchmark with each model in a fresh worker process on this machine (one at a time,
    as ``blipq bench`` runs them); returns the exit status (1 when an image failed)."""
    import concurrent.futures
    import multiprocessing

    check_models(models)
    options.check()
    size = max(CHUNK, options.batch_size)
    size -= size % options.batch_size
    results = []
    ctx = multiprocessing.get_context("spawn")
    for model, label in zip(models, labels(models)):
        print(f"== {label}: {model}", file=sys.stderr)
        gathered = Gathered()
        with concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=ctx,
            initializer=_start_worker,
            initargs=(model, asdict(options), threads),
        ) as pool:
            futures = [
                pool.submit(
                    _run_chunk, [the_items.items[i] for i in r], list(r), the_items.images_dir
                )
                for r in chunks(len(the_items.items), size)
            ]
            progress = Progress(label, len(the_items.items))
            try:
                for f in futures:
                    progress.update(gathered.add(*f.result()))
            except concurrent.futures.process.BrokenProcessPool:
                raise RuntimeError(
                    f"{label}: the worker process could not start (its error is above)"
                ) from None
        results.append(results_of(label, model, the_items, gathered, options))
    _, failed = finish(out, results, baselines)
    return 1 if failed else 0


def count(least: int) -> Any:
    """An argparse type: an int of at least ``least``."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if n < least:
            raise argparse.ArgumentTypeError(f"{n}: give at least {least}")
        return n

    return parse


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    """``blipq bench``'s arguments."""
    p.add_argument("--model", action="append", required=True, dest="models",
                   help="checkpoint folder; repeat to compare models (the first is the reference)")
    p.add_argument("--annotations", help="COCO captions file (enables the quality metrics)")
    p.add_argument("--images", help="folder of the images (default: the annotations' folder)")
    p.add_argument("--baseline", action="append", default=[], dest="baselines",
                   help="results JSON of another runtime to show beside blipq's")
    p.add_argument("--out", default="bench-out", help="report folder (default: bench-out)")
    p.add_argument("--warmup", type=count(0), default=3, help="untimed captions per worker first")
    p.add_argument("--limit", type=count(1), help="the first N images only")
    p.add_argument("--max-length", type=count(1))
    p.add_argument("--num-beams", type=count(1))
    p.add_argument("--prompt")
    p.add_argument("--fixed-new-tokens", type=count(1),
                   help="ignore the end token and generate exactly N new tokens")
    p.add_argument("--batch-size", type=count(1), default=1,
                   help="caption N images at once (1 = one at a time)")


def options_of(args: argparse.Namespace) -> Options:
    return Options(
        warmup=args.warmup,
        limit=args.limit,
        max_length=args.max_length,
        num_beams=args.num_beams,
        prompt=args.prompt,
        fixed_new_tokens=args.fixed_new_tokens,
        batch_size=args.batch_size,
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m blipq.bench",
        description="blipq bench in Python: each model in a fresh process on this machine.",
    )
    add_bench_arguments(p)
    p.add_argument("--threads", type=count(1), help="threads per model (default: all cores)")
    args = p.parse_args(argv)
    try:
        opts = options_of(args)
        opts.check()
        check_models(args.models)
        the_items = items(args.annotations, args.images, opts.limit)
        return run_local(args.models, the_items, opts, args.out, args.threads, args.baselines)
    except (OSError, ValueError, RuntimeError, _blipq.BlipqError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Through the package's module, so that worker processes find its functions.
    from blipq.bench import main as _main

    sys.exit(_main())
