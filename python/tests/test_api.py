"""The Python API against the CLI: the same token ids as ``blipq caption --json`` for every kind
of image input, the same quantized bytes as ``blipq quantize``, the same scores as ``blipq eval``
and the same reports as ``blipq bench``; clear exceptions for bad input; the GIL released while
the engine works."""

from __future__ import annotations

import io
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import blipq
from conftest import cli_captions, run_cli

FIXTURE_IMAGES = [
    "astronaut.jpg",
    "camera.png",
    "chelsea.png",
    "coffee.jpg",
    "coins_gray16.png",
    "ihc_palette.png",
    "rocket_rgba.png",
]


@pytest.fixture(scope="module")
def models(repo: Path) -> dict:
    return {
        "tiny": repo / "tests/fixtures/tiny",
        "demo": repo / "models/demo",
        "demo-int8": repo / "models/demo-int8",
    }


def images(repo: Path) -> list:
    return [repo / "tests/fixtures/images" / n for n in FIXTURE_IMAGES]


@pytest.mark.parametrize("name", ["tiny", "demo", "demo-int8"])
@pytest.mark.parametrize(
    "flags,kwargs",
    [
        ([], {}),
        (["--num-beams", "3", "--max-new-tokens", "12"], {"num_beams": 3, "max_new_tokens": 12}),
        (["--prompt", "a picture of", "--max-length", "16"], {"prompt": "a picture of", "max_length": 16}),
    ],
)
def test_captions_equal_the_cli(repo, cli, models, name, flags, kwargs):
    model = blipq.Captioner.load(models[name])
    paths = images(repo)
    expected = cli_captions(cli, models[name], paths, *flags)
    prefix = 1 + (3 if "prompt" in kwargs else 0)  # bos, and "a picture of" is 3 tokens
    for path, row in zip(paths, expected):
        c = model.caption(path, **kwargs)
        assert c.token_ids == row["token_ids"], path.name
        assert c.caption == row["caption"], path.name
        assert c.new_tokens == len(row["token_ids"]) - prefix
        assert c.timings.total_s >= c.timings.vision_s > 0
    # The captions depend on the image (a model that ignored it would pass the above too).
    assert len({tuple(r["token_ids"]) for r in expected}) > 1


def test_every_kind_of_image_gives_the_same_tokens(repo, models):
    """Path, bytes, bytearray, memoryview, PIL image (any mode) and numpy array of the same
    pixels caption alike."""
    model = blipq.Captioner.load(models["tiny"])
    for path in images(repo):
        want = model.caption(path).token_ids
        data = path.read_bytes()
        assert model.caption(str(path)).token_ids == want
        assert model.caption(data).token_ids == want
        assert model.caption(bytearray(data)).token_ids == want
        assert model.caption(memoryview(data)).token_ids == want
        if path.suffix == ".png":
            # PNG decodes to the same pixels in PIL and in blipq (JPEG decoders may differ by
            # a unit here and there); non-RGB modes go through the same RGB conversion.
            pil = Image.open(path)
            assert model.caption(pil).token_ids == want, (path.name, pil.mode)
        rgb = Image.open(io.BytesIO(data))
        if rgb.mode == "RGB" and path.suffix == ".png":
            arr = np.asarray(rgb)
            assert arr.dtype == np.uint8 and arr.shape[2] == 3
            assert model.caption(arr).token_ids == want
            # A non-contiguous view: the mirror image, as a strided view and as a copy.
            mirrored = arr[:, ::-1]
            assert not mirrored.flags["C_CONTIGUOUS"]
            assert (
                model.caption(mirrored).token_ids
                == model.caption(np.ascontiguousarray(mirrored)).token_ids
            )


def test_caption_batch_equals_one_at_a_time(repo, models):
    model = blipq.Captioner.load(models["demo-int8"])
    paths = images(repo)
    batch = model.caption_batch(paths + [b"not an image"], num_beams=2)
    assert len(batch) == len(paths) + 1
    for path, c in zip(paths, batch):
        assert isinstance(c, blipq.Caption)
        assert c.token_ids == model.caption(path, num_beams=2).token_ids
    assert isinstance(batch[-1], blipq.BlipqError)
    assert "not a recognised image" in str(batch[-1]) and f"<bytes {len(paths)}>" in str(batch[-1])


def test_bad_images_raise_clear_exceptions(repo, models, scratch):
    model = blipq.Captioner.load(models["tiny"])
    cases = [
        (np.zeros((8, 8), np.uint8), ValueError, "HxWx3"),
        (np.zeros((8, 8, 4), np.uint8), ValueError, "HxWx3"),
        (np.zeros((8, 8, 3), np.float32), TypeError, "uint8"),
        (np.zeros((0, 8, 3), np.uint8), ValueError, "empty"),
        (12, TypeError, "an image is a path"),
        (None, TypeError, "an image is a path"),
        (scratch / "missing.png", FileNotFoundError, "missing.png"),
        (b"", blipq.BlipqError, "empty file"),
        (b"\x89PNG\r\n\x1a\n truncated", blipq.BlipqError, "PNG"),
        (scratch, blipq.BlipqError, "directory"),
    ]
    for image, exc, words in cases:
        with pytest.raises(exc) as e:
            model.caption(image)
        assert words in str(e.value), (image if not hasattr(image, "shape") else image.shape, e.value)


def test_bad_options_raise(models):
    model = blipq.Captioner.load(models["tiny"])
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="not both"):
        model.caption(img, max_length=10, max_new_tokens=5)
    with pytest.raises(blipq.BlipqError, match="num_beams"):
        model.caption(img, num_beams=0)
    with pytest.raises(blipq.BlipqError, match="max_length"):
        model.caption(img, max_length=100000)
    with pytest.raises(TypeError, match="num_beams"):
        model.caption(img, num_beams="3")
    with pytest.raises(TypeError, match="prompt"):
        model.caption(img, prompt=3)
    with pytest.raises(ValueError, match="batch"):
        model.caption_batch([img] * 33)
    with pytest.raises(ValueError, match="over the limit"):
        model.caption(np.lib.stride_tricks.as_strided(np.zeros(3, np.uint8), (9000, 9000, 3), (0, 0, 1)))


def hostile_checkpoints(repo: Path, root: Path) -> dict:
    """Broken copies of the tiny checkpoint, each with what its error must name."""
    src = repo / "tests/fixtures/tiny"
    out = {}

    def copy(name: str) -> Path:
        d = root / name
        shutil.copytree(src, d)
        return d

    d = copy("truncated")
    w = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(w[: len(w) // 2])
    out[d] = "model.safetensors"
    d = copy("huge-header")
    (d / "model.safetensors").write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    out[d] = "model.safetensors"
    d = copy("bad-config")
    (d / "config.json").write_text("{ not json")
    out[d] = "config.json"
    d = copy("no-weights")
    (d / "model.safetensors").unlink()
    out[d] = "model.safetensors"
    d = copy("nan-dims")
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"]["hidden_size"] = 33
    (d / "config.json").write_text(json.dumps(cfg))
    out[d] = "hidden"
    d = copy("nan-weights")
    w = bytearray((d / "model.safetensors").read_bytes())
    n = int.from_bytes(w[:8], "little")
    header = json.loads(w[8 : 8 + n])
    name = next(k for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32")
    start = 8 + n + header[name]["data_offsets"][0]
    w[start : start + 4] = bytes.fromhex("0000c07f")  # a float32 NaN
    (d / "model.safetensors").write_bytes(bytes(w))
    out[d] = "NaN"
    d = copy("bad-tokenizer")
    (d / "tokenizer.json").write_text("{}")
    out[d] = "tokenizer.json"
    d = copy("fifo-weights")
    (d / "model.safetensors").unlink()
    import os

    os.mkfifo(d / "model.safetensors")
    out[d] = "FIFO"
    return out


def test_hostile_checkpoints_raise_and_name_the_problem(repo, scratch):
    for path, words in hostile_checkpoints(repo, scratch).items():
        with pytest.raises(blipq.BlipqError) as e:
            blipq.Captioner.load(path)
        assert words in str(e.value), (path.name, str(e.value))
    with pytest.raises(FileNotFoundError):
        blipq.Captioner.load(scratch / "nowhere")
    with pytest.raises(NotADirectoryError):
        blipq.Captioner.load(repo / "README.md")


def test_quantize_writes_the_cli_bytes(repo, cli, scratch):
    src = repo / "models/demo"
    ours, theirs = scratch / "py", scratch / "cli"
    lines = []
    report = blipq.quantize(src, ours, scheme="q4_0", validate=True,
                            progress=lambda stage, done, total, what: lines.append(stage))
    run_cli(cli, "quantize", "--scheme", "q4_0", "--model", src, "--out", theirs)
    assert (ours / "model.safetensors").read_bytes() == (theirs / "model.safetensors").read_bytes()
    want = json.loads((theirs / "quantized_results.json").read_text())
    assert report["model_metrics"]["quantized_size_mb"] == want["model_metrics"]["quantized_size_mb"]
    assert report["validation"]["token_agreement"] == want["validation"]["token_agreement"]
    assert json.loads((ours / "quantized_results.json").read_text())["model_metrics"] == report["model_metrics"]
    assert "quantizing" in lines and "validating" in lines
    # The quantized model captions like the CLI's.
    a = blipq.Captioner.load(ours).caption(repo / "tests/fixtures/images/chelsea.png")
    b = cli_captions(cli, theirs, [repo / "tests/fixtures/images/chelsea.png"])[0]
    assert a.token_ids == b["token_ids"]


def test_calibrated_quantize_writes_the_cli_bytes(repo, cli, scratch):
    src = repo / "models/demo"
    ours, theirs = scratch / "py", scratch / "cli"
    stages = []
    report = blipq.quantize(src, ours, scheme="q4_g128", calibrate=True, validate=False,
                            progress=lambda stage, done, total, what: stages.append(stage))
    run_cli(cli, "quantize", "--scheme", "q4_g128", "--calibrate", "--no-validate",
            "--model", src, "--out", theirs)
    assert (ours / "model.safetensors").read_bytes() == (theirs / "model.safetensors").read_bytes()
    assert report["quantization_info"]["calibration"]["images"] == 6
    assert stages[0] == "calibrating" and "quantizing" in stages
    with pytest.raises(blipq.BlipqError, match="it does nothing for q8_0"):
        blipq.quantize(src, scratch / "q8", calibrate=True, progress=False)
    assert not (scratch / "q8").exists()


def test_quantize_refuses_and_loses_nothing(repo, scratch):
    src = repo / "models/demo"
    out = scratch / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(blipq.BlipqError, match="not empty|non-empty|force"):
        blipq.quantize(src, out, validate=False, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(blipq.BlipqError, match="scheme"):
        blipq.quantize(src, scratch / "o2", scheme="q3", progress=False)
    with pytest.raises(blipq.BlipqError, match="mixed"):
        blipq.quantize(src, scratch / "o3", size_budget=0.3, progress=False)
    with pytest.raises(blipq.BlipqError):
        blipq.quantize(src, scratch / "o4", validation_images=scratch / "none", progress=False)
    with pytest.raises(blipq.BlipqError, match="source|inside"):
        blipq.quantize(src, src / "sub", progress=False)
    for o in ("o2", "o3", "o4"):
        assert not (scratch / o).exists()


def test_a_raising_progress_callback_stops_quantize_and_writes_nothing(repo, scratch):
    class Stop(Exception):
        pass

    def progress(stage, done, total, what):
        raise Stop(f"stop at {stage}")

    out = scratch / "out"
    with pytest.raises(Stop, match="stop at quantizing"):
        blipq.quantize(repo / "models/demo", out, progress=progress)
    assert not out.exists()
    assert [p.name for p in scratch.iterdir()] == []  # no partial folder either


def test_evaluate_equals_the_cli(repo, cli, scratch):
    ann = repo / "data/demo-eval/captions.json"
    model = blipq.Captioner.load(repo / "models/demo-int8")
    data = json.loads(ann.read_text())
    rows = [
        {"image_id": i["id"], "caption": model.caption(repo / "data/demo-eval" / i["file_name"]).caption}
        for i in data["images"][:25]
    ]
    results = scratch / "results.json"
    results.write_text(json.dumps(rows))
    ours = blipq.evaluate(ann, results)
    theirs = json.loads(run_cli(cli, "eval", "--annotations", ann, "--results", results).stdout)
    assert ours == theirs
    assert set(ours) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}
    with pytest.raises(blipq.BlipqError):
        blipq.evaluate(ann, scratch / "missing.json")


def same_run(a: dict, b: dict) -> None:
    """Two results JSONs of one model: the same captions, token for token, the same failures,
    metrics and model facts (timings and memory are measurements and differ)."""
    key = lambda r: [
        (s["image"], s.get("image_id"), s["caption"], s["token_ids"], s["new_tokens"],
         s.get("image_embedding_cls"))
        for s in r["samples"]
    ]
    assert key(a) == key(b)
    assert a["failures"] == b["failures"]
    assert a["quality_metrics"] == b["quality_metrics"]
    assert a["model_info"] == b["model_info"]
    assert a["performance_metrics"]["total_samples"] == b["performance_metrics"]["total_samples"]
    assert a["performance_metrics"]["failed_samples"] == b["performance_metrics"]["failed_samples"]


def test_python_bench_writes_the_cli_reports(repo, cli, scratch):
    """``python -m blipq.bench`` (one worker process per model) against ``blipq bench``."""
    import subprocess
    import sys

    common = ["--model", repo / "models/demo", "--model", repo / "models/demo-int8",
              "--annotations", repo / "data/demo-eval/captions.json", "--limit", "10"]
    r = subprocess.run([sys.executable, "-m", "blipq.bench", *map(str, common), "--out",
                        str(scratch / "py")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    run_cli(cli, "bench", *common, "--out", scratch / "cli")
    for label in ("demo", "demo-int8"):
        a = json.loads((scratch / "cli" / f"{label}_results.json").read_text())
        b = json.loads((scratch / "py" / f"{label}_results.json").read_text())
        same_run(a, b)
        assert (scratch / "cli" / f"{label}_captions.json").read_bytes() == (
            scratch / "py" / f"{label}_captions.json"
        ).read_bytes()
    assert "BLEU-4" in r.stdout
    # A checkpoint that cannot load: a clear error and status 2, not a traceback.
    r = subprocess.run([sys.executable, "-m", "blipq.bench", "--model", str(repo / "data"),
                        "--images", str(repo / "data/demo-eval"), "--limit", "2", "--out",
                        str(scratch / "bad")], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "error: data: the worker process could not start" in r.stderr, r.stderr
    assert "model.safetensors" in r.stderr, r.stderr


def test_the_gil_is_released_while_captioning(repo):
    """A Python thread keeps running while another captions: with the GIL held through the
    engine call, the longest pause this thread sees would be the whole call."""
    model = blipq.Captioner.load(repo / "tests/fixtures/tiny")
    batch = [repo / "tests/fixtures/images/chelsea.png"] * 32
    model.caption_batch(batch[:2], fixed_new_tokens=4)
    done = threading.Event()
    took = {"s": 0.0}

    failed = []

    def work() -> None:
        t = time.perf_counter()
        try:
            model.caption_batch(batch, fixed_new_tokens=400)
        except BaseException as e:  # reported below, not lost in the thread
            failed.append(e)
        finally:
            took["s"] = time.perf_counter() - t
            done.set()

    th = threading.Thread(target=work)
    longest, last = 0.0, time.perf_counter()
    th.start()
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    th.join()
    assert not failed, failed
    assert took["s"] > 0.1, f"the work took only {took['s']:.3f} s: too short to tell"
    assert longest < took["s"] / 3, f"paused {longest:.3f} s of {took['s']:.3f} s"


def test_threads_are_set_once():
    n = blipq.threads()
    assert n >= 1
    assert blipq.set_threads(n) == n
    with pytest.raises(blipq.BlipqError, match="once per process"):
        blipq.set_threads(n + 1)
    assert blipq.threads() == n
    with pytest.raises(TypeError):
        blipq.set_threads("2")
