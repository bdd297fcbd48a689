"""blipq: BLIP image captioning in Rust, FP32 and quantized, from Python.

The same engine as the ``blipq`` command-line tool and the web page, with the CLI's names::

    import blipq
    model = blipq.Captioner.load("models/demo-int8")
    print(model.caption("photo.jpg").caption)

- :class:`Captioner` loads a checkpoint folder and captions images: a path, encoded bytes, a PIL
  image or an ``HxWx3`` ``uint8`` numpy array. The GIL is released while it works.
- :func:`quantize` is ``blipq quantize``; :func:`evaluate` is ``blipq eval``.
- ``python -m blipq.bench`` is ``blipq bench`` in one Python process, and ``python -m blipq.ray``
  spreads the same benchmark over a Ray cluster; both write ``blipq bench``'s reports.

Every engine error is raised as :class:`BlipqError` with the engine's message; wrong Python
types and shapes raise ``TypeError`` / ``ValueError`` first.
"""

from __future__ import annotations

import io
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

from . import _blipq
from ._blipq import BlipqError

__all__ = [
    "BlipqError",
    "Caption",
    "Captioner",
    "Timings",
    "evaluate",
    "quantize",
    "set_threads",
    "threads",
    "__version__",
]

__version__: str = _blipq.VERSION

Image = Any
"""An image: a path (``str`` or ``os.PathLike``), encoded file bytes (``bytes``, ``bytearray``,
``memoryview``: PNG, JPEG, WebP, GIF or BMP), a PIL image, or an ``HxWx3`` ``uint8`` numpy array
(RGB)."""


@dataclass(frozen=True)
class Timings:
    """Seconds spent in each stage of one caption (in a batch: the image's own preprocessing and
    an equal share of the batch's vision and decoding time)."""

    preprocess_s: float
    vision_s: float
    decode_s: float
    total_s: float


@dataclass(frozen=True)
class Caption:
    """A caption, the token ids the model generated (leading bos and prompt included, as
    ``blipq caption --json`` and transformers' ``generate`` give them), the number of new tokens
    after the prefix, and per-stage timings."""

    caption: str
    token_ids: List[int]
    new_tokens: int
    timings: Timings

    @classmethod
    def _of(cls, t: Tuple[str, List[int], int, Tuple[float, float, float, float]]) -> "Caption":
        caption, ids, new_tokens, timings = t
        return cls(caption, list(ids), new_tokens, Timings(*timings))


def set_threads(n: int) -> int:
    """Sets how many threads blipq computes on in this process: once, before blipq first
    computes anything (loading a model, captioning, quantizing, evaluating); default:
    ``RAYON_NUM_THREADS``, else one per core. Returns the count."""
    _check_count("threads", n)
    return _blipq.set_threads(n)


def threads() -> int:
    """How many threads blipq computes on in this process (or will: asking fixes nothing)."""
    return _blipq.threads()


def _check_count(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} is {value}; it must not be negative")


def _image_arg(image: Image) -> Tuple[str, Any]:
    """``(name, value)`` for the engine: encoded bytes, or ``(width, height, rgb_bytes)``."""
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"image {path}: no such file")
        return path, _blipq.read_image(path)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return "<bytes>", bytes(image)
    module = type(image).__module__ or ""
    if module.startswith("PIL.") and hasattr(image, "mode") and hasattr(image, "tobytes"):
        return "<PIL image>", _pil_arg(image)
    if hasattr(image, "__array_interface__") and hasattr(image, "dtype"):
        return "<array>", _array_arg(image)
    raise TypeError(
        "an image is a path, encoded file bytes, a PIL image or an HxWx3 uint8 numpy array, "
        f"not {type(image).__module__}.{type(image).__name__}"
    )


def _pil_arg(image: Any) -> Any:
    """An RGB PIL image's pixels as they are; any other mode as a lossless PNG, which the engine
    converts to RGB exactly as it converts a file of that mode (alpha composited on white, as
    transformers does), or, for modes PNG cannot hold, PIL's own RGB conversion."""
    width, height = image.size
    if image.mode == "RGB":
        return (width, height, image.tobytes())
    buf = io.BytesIO()
    try:
        image.save(buf, format="PNG")
    except (OSError, ValueError, KeyError):
        rgb = image.convert("RGB")
        return (width, height, rgb.tobytes())
    return buf.getvalue()


def _array_arg(array: Any) -> Any:
    shape = tuple(getattr(array, "shape", ()))
    dtype = str(getattr(array, "dtype", "?"))
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(
            f"an image array must be HxWx3 (RGB, one uint8 per channel); this one has shape {shape}"
        )
    if dtype != "uint8":
        raise TypeError(
            f"an image array must be of dtype uint8 (0-255 per channel); this one is {dtype}"
        )
    height, width = int(shape[0]), int(shape[1])
    if height == 0 or width == 0:
        raise ValueError(f"an image array must not be empty; this one has shape {shape}")
    if height * width > _blipq.MAX_PIXELS:
        raise ValueError(
            f"an image array of {width}x{height} = {height * width} pixels is over the limit of "
            f"{_blipq.MAX_PIXELS}"
        )
    import numpy as np  # present: the array is numpy's (or follows its array interface)

    pixels = np.ascontiguousarray(array).tobytes()
    return (width, height, pixels)


def _options(
    prompt: Optional[str],
    max_length: Optional[int],
    max_new_tokens: Optional[int],
    min_length: Optional[int],
    num_beams: Optional[int],
    fixed_new_tokens: Optional[int],
) -> dict:
    if prompt is not None and not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    if max_length is not None and max_new_tokens is not None:
        raise ValueError("give max_length or max_new_tokens, not both")
    for name, v in (
        ("max_length", max_length),
        ("max_new_tokens", max_new_tokens),
        ("min_length", min_length),
        ("num_beams", num_beams),
        ("fixed_new_tokens", fixed_new_tokens),
    ):
        _check_count(name, v, allow_none=True)
    return dict(
        prompt=prompt,
        max_length=max_length,
        max_new_tokens=max_new_tokens,
        min_length=min_length,
        num_beams=num_beams,
        fixed_new_tokens=fixed_new_tokens,
    )


class Captioner:
    """A loaded BLIP checkpoint: FP32 (safetensors, sharded or ``pytorch_model.bin``), F16/BF16,
    or any scheme of :func:`quantize`. Safe to share between threads."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], *, threads: Optional[int] = None) -> "Captioner":
        """Loads the checkpoint folder ``path`` (``blipq caption --model``). ``threads`` sets this
        process's thread count when the first model loads (see :func:`set_threads`)."""
        _check_count("threads", threads, allow_none=True)
        p = os.fspath(path)
        if not os.path.isdir(p):
            if os.path.exists(p):
                raise NotADirectoryError(f"model {p}: not a checkpoint folder")
            raise FileNotFoundError(f"model {p}: no such folder")
        return cls(_blipq.Captioner.load(p, threads))

    @property
    def path(self) -> str:
        """The checkpoint folder."""
        return os.fspath(self._native.path)

    @property
    def info(self) -> dict:
        """``total_parameters``, ``is_quantized``, ``dtype`` and ``weights_bytes`` of the model."""
        total, quantized, dtype, weights = self._native.info()
        return dict(
            total_parameters=total, is_quantized=quantized, dtype=dtype, weights_bytes=weights
        )

    def caption(
        self,
        image: Image,
        prompt: Optional[str] = None,
        max_length: Optional[int] = None,
        max_new_tokens: Optional[int] = None,
        min_length: Optional[int] = None,
        num_beams: Optional[int] = None,
        *,
        fixed_new_tokens: Optional[int] = None,
    ) -> Caption:
        """Captions one image (``blipq caption``). ``prompt`` conditions the caption ("a picture
        of"); ``max_length`` counts the prefix (bos and prompt), ``max_new_tokens`` does not
        (give one of them; default: the checkpoint's generation config); ``num_beams`` 1 is
        greedy. ``fixed_new_tokens`` ignores the end token (benchmarks)."""
        opts = _options(prompt, max_length, max_new_tokens, min_length, num_beams, fixed_new_tokens)
        name, value = _image_arg(image)
        return Caption._of(self._native.caption(value, name, opts))

    def caption_batch(
        self,
        images: Iterable[Image],
        prompt: Optional[str] = None,
        max_length: Optional[int] = None,
        max_new_tokens: Optional[int] = None,
        min_length: Optional[int] = None,
        num_beams: Optional[int] = None,
        *,
        fixed_new_tokens: Optional[int] = None,
    ) -> List[Union[Caption, BlipqError]]:
        """Captions up to 32 images at once with the same options (``blipq caption
        --batch-size``): the same token ids as :meth:`caption` gives each alone, more images per
        second on several cores. Returns one entry per image, in order: its :class:`Caption`, or
        for an image the engine could not read, a :class:`BlipqError` (returned, not raised).
        Bad options, a wrong Python type or too many images raise."""
        opts = _options(prompt, max_length, max_new_tokens, min_length, num_beams, fixed_new_tokens)
        pairs = []
        for k, image in enumerate(images):
            if k == _blipq.MAX_BATCH:
                raise ValueError(
                    f"more than {_blipq.MAX_BATCH} images: a batch takes 1 to {_blipq.MAX_BATCH}"
                )
            name, value = _image_arg(image)
            # In-memory images are named by their position in errors: "<bytes 3>".
            pairs.append((f"{name[:-1]} {k}>" if name.startswith("<") else name, value))
        out: List[Union[Caption, BlipqError]] = []
        for r in self._native.caption_batch(pairs, opts):
            out.append(r if isinstance(r, BlipqError) else Caption._of(r))
        return out


def _stderr_progress() -> Callable[[str, int, int, str], None]:
    """A progress line on stderr (rewritten in place on a terminal, else at each stage's end)."""
    tty = sys.stderr.isatty()
    last = {"stage": None}

    def show(stage: str, done: int, total: int, what: str) -> None:
        if tty:
            msg = f"\r{stage} {done}/{total} {what}"[:120]
            sys.stderr.write(msg.ljust(120))
            if done >= total:
                sys.stderr.write("\r" + " " * 120 + "\r")
            sys.stderr.flush()
        elif done >= total and total > 0 and last["stage"] != stage:
            last["stage"] = stage
            print(f"{stage}: {total}/{total} done", file=sys.stderr)

    return show


def quantize(
    model: Union[str, "os.PathLike[str]"],
    out: Union[str, "os.PathLike[str]"],
    *,
    scheme: str = "q8_0",
    validate: bool = True,
    validation_images: Optional[Union[str, "os.PathLike[str]"]] = None,
    size_budget: Optional[float] = None,
    quality_floor: Optional[float] = None,
    calibrate: bool = False,
    force: bool = False,
    progress: Union[bool, Callable[[str, int, int, str], None]] = True,
) -> dict:
    """``blipq quantize``: writes the quantized checkpoint of the folder ``model`` into the new
    folder ``out`` (which appears only once complete, with ``quantized_results.json``), after
    validating it against the source on the built-in images plus ``validation_images``.

    ``scheme``: ``q8_0`` (default), ``int8-channel``, ``q4_0``, ``q4_g128``, ``mixed``, ``f16``
    or ``bf16``; ``size_budget`` and ``quality_floor`` are the mixed scheme's. ``calibrate``
    (4-bit schemes, ``int8-channel``) calibrates on the validation images, as ``blipq quantize
    --calibrate``: 4-bit scales chosen with the FP32 model's activations, or SmoothQuant-style
    smoothing for ``int8-channel``. ``force``
    replaces a non-empty ``out`` (never a source). ``progress``: True shows progress and the
    summary lines on stderr, False nothing, or a callable ``(stage, done, total, what)``.
    Returns the report (``quantized_results.json``) as a dict."""
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a str, not {type(scheme).__name__}")
    for name, v in (("size_budget", size_budget), ("quality_floor", quality_floor)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise TypeError(f"{name} must be a number, not {type(v).__name__}")
    if progress is True:
        on_progress: Optional[Callable] = _stderr_progress()
        on_message: Optional[Callable] = lambda line: print(line, file=sys.stderr)
    elif progress is False or progress is None:
        on_progress, on_message = None, None
    elif callable(progress):
        on_progress, on_message = progress, None
    else:
        raise TypeError("progress must be True, False or a callable (stage, done, total, what)")
    report = _blipq.quantize(
        os.fspath(model),
        os.fspath(out),
        scheme=scheme,
        validate=bool(validate),
        validation_images=None if validation_images is None else os.fspath(validation_images),
        size_budget=None if size_budget is None else float(size_budget),
        quality_floor=None if quality_floor is None else float(quality_floor),
        calibrate=bool(calibrate),
        force=bool(force),
        progress=on_progress,
        message=on_message,
    )
    return json.loads(report)


def evaluate(
    annotations: Union[str, "os.PathLike[str]"], results: Union[str, "os.PathLike[str]"]
) -> dict:
    """``blipq eval``: the caption metrics of ``blipq bench`` (``Bleu_1`` to ``Bleu_4``,
    ``ROUGE_L`` and ``CIDEr``, by the COCO caption evaluation's rules) of a COCO results file
    (``[{"image_id", "caption"}]``) against a COCO captions annotations file, as a dict."""
    return json.loads(_blipq.evaluate(os.fspath(annotations), os.fspath(results)))
