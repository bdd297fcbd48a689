"""Type stubs of the extension module ``blipq._blipq`` (src/python.rs). The public API is the
package ``blipq`` (``__init__.py``), which wraps these plain values in dataclasses."""

from os import PathLike
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

VERSION: str

_Path = Union[str, PathLike[str]]
# Encoded file bytes, or (width, height, RGB bytes: rows top to bottom, 3 bytes a pixel).
_Image = Union[bytes, Tuple[int, int, bytes]]
# Every key of prompt, max_length, max_new_tokens, min_length, num_beams, fixed_new_tokens
# (None: the checkpoint's default).
_Options = Dict[str, Union[str, int, None]]
# (caption, token_ids, new_tokens, (preprocess_s, vision_s, decode_s, total_s))
_Caption = Tuple[str, List[int], int, Tuple[float, float, float, float]]

class BlipqError(Exception):
    """An error of the blipq engine: a bad file, image, checkpoint or argument, named in the
    message."""

class Captioner:
    @staticmethod
    def load(path: _Path, threads: Optional[int] = None) -> Captioner: ...
    @property
    def path(self) -> Path: ...
    def info(self) -> Tuple[int, bool, str, int]: ...
    def caption(self, image: _Image, name: str, options: Optional[_Options] = None) -> _Caption: ...
    def caption_batch(
        self, images: Sequence[Tuple[str, _Image]], options: Optional[_Options] = None
    ) -> List[Union[_Caption, BlipqError]]: ...
    def check_options(self, options: Optional[_Options] = None) -> None: ...
    def bench_run(
        self,
        items: str,
        indices: Sequence[int],
        images_dir: Optional[_Path] = None,
        image_bytes: Optional[Sequence[Union[bytes, str]]] = None,
        warmup: int = 0,
        batch_size: int = 1,
        options: Optional[_Options] = None,
    ) -> str: ...
    def report_info(self) -> str: ...

def set_threads(threads: int) -> int: ...
def threads() -> int: ...
def quantize(
    model: _Path,
    out: _Path,
    scheme: str = "q8_0",
    validate: bool = True,
    validation_images: Optional[_Path] = None,
    size_budget: Optional[float] = None,
    quality_floor: Optional[float] = None,
    calibrate: bool = False,
    force: bool = False,
    progress: Optional[Callable[[str, int, int, str], object]] = None,
    message: Optional[Callable[[str], object]] = None,
) -> str: ...
def evaluate(annotations: _Path, results: _Path) -> str: ...
def bench_items(
    annotations: Optional[_Path] = None, images: Optional[_Path] = None, limit: Optional[int] = None
) -> Tuple[str, Path]: ...
def bench_labels(models: Sequence[_Path]) -> List[str]: ...
def bench_results(
    label: str,
    items: str,
    pieces: Sequence[str],
    batch_size: int,
    peak_memory_mb: Optional[float],
    model_info: str,
) -> str: ...
def bench_reports(out: _Path, own: Sequence[str], baselines: Sequence[_Path] = ...) -> str: ...
def read_image(path: _Path) -> bytes: ...
def peak_rss_mb() -> Optional[float]: ...
