"""A gallery of search results (`infer.py search --gallery FILE`): per query its top-k videos, each as a
thumbnail strip of a few frames with its rank, score and id. FILE.html is self-contained (the strips are
embedded as base64 JPEG); FILE.png draws the same in one image.

Frames are read with dataloaders.video_reader.read_frames (the evaluation sampler's segment centres, upright);
a video that cannot be found or read gets a grey strip saying why. An id from a file name that is not UTF-8 is
shown with those bytes as \\xNN (dataloaders.video_files.printable).
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw

from dataloaders.video_files import printable
from dataloaders.video_reader import VideoReadError, read_frames
from utils.atomic_file import write_atomic
from utils.output_file import check_output_file

GALLERY_SUFFIXES = (".html", ".htm", ".png")
CAPTION_PX = 14  # text line height in the PNG
STYLE = ("body{font-family:sans-serif;margin:1em}section{margin-bottom:1.5em}figure{margin:.3em 0}"
         "figcaption{font-size:.9em}img{display:block;image-rendering:pixelated}")


class GalleryError(ValueError):
    """A gallery file name with an unknown suffix (one that exists already: utils.output_file.OutputFileError)."""


def check_gallery_path(path: str | Path) -> Path:
    """`path` if it is a new .html/.htm/.png file; GalleryError otherwise (checked before any work)."""
    path = Path(path)
    if path.suffix.lower() not in GALLERY_SUFFIXES:
        raise GalleryError(f"--gallery {path}: the name must end in {', '.join(GALLERY_SUFFIXES)}")
    return check_output_file(path, "--gallery")


def thumbnail_strip(path: str | None, num_frames: int, height: int) -> tuple[np.ndarray, str | None]:
    """(uint8 [height, W, 3] strip of `num_frames` frames side by side, each scaled to `height` px high,
    None or why the video could not be shown). An unreadable video gives a grey strip 16:9 per frame."""
    if path is not None:
        try:
            frames = read_frames(path, num_frames)
        except VideoReadError as error:
            problem = error.reason
        except Exception as error:  # any other decoding failure: shown, never fatal (as when indexing)
            problem = f"{type(error).__name__}: {error}"
        else:
            width = max(1, round(frames.shape[2] * height / frames.shape[1]))
            return np.concatenate([np.asarray(Image.fromarray(f).resize((width, height), Image.BILINEAR))
                                   for f in frames], axis=1), None
    else:
        problem = "video file not found"
    return np.full((height, num_frames * round(height * 16 / 9), 3), 128, np.uint8), problem


def jpeg_bytes(strip: np.ndarray) -> bytes:
    """A thumbnail strip as a JPEG file's bytes (quality 85)."""
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _jpeg_base64(strip: np.ndarray) -> str:
    return base64.b64encode(jpeg_bytes(strip)).decode()


def _caption(hit: dict[str, Any], problem: str | None) -> str:
    return printable(f"{hit['rank']}. {hit['score']:.4f} {hit['id']}" + (f" ({problem})" if problem else ""))


def _html(results: list[dict[str, Any]], strips: dict[str, tuple[np.ndarray, str | None]], title: str) -> str:
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>"]
    for result in results:
        parts.append(f"<section class=\"query\"><h2>{html.escape(result['query'])}</h2>")
        for hit in result["results"]:
            strip, problem = strips[hit["id"]]
            shown = html.escape(printable(hit["id"]))
            parts.append(f"<figure class=\"result\" data-rank=\"{hit['rank']}\" data-id=\"{shown}\" "
                         f"data-score=\"{hit['score']}\"><img alt=\"{shown}\" "
                         f"src=\"data:image/jpeg;base64,{_jpeg_base64(strip)}\"><figcaption>"
                         f"{html.escape(_caption(hit, problem))}</figcaption></figure>")
        parts.append("</section>")
    return "\n".join(parts) + "\n</body></html>\n"


def _png(results: list[dict[str, Any]], strips: dict[str, tuple[np.ndarray, str | None]], title: str) -> bytes:
    """Rows: the title, then per query its text and one row per result (caption above its strip)."""
    rows: list[tuple[str, np.ndarray | None]] = [(title, None)]
    for result in results:
        rows.append((f"query: {result['query']}", None))
        rows += [(_caption(hit, strips[hit["id"]][1]), strips[hit["id"]][0]) for hit in result["results"]]
    width = max([8 * len(text) for text, _ in rows] + [s.shape[1] for _, s in rows if s is not None]) + 8
    height = sum(CAPTION_PX + (0 if s is None else s.shape[0] + 4) for _, s in rows) + 8
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    y = 4
    for text, strip in rows:
        draw.text((4, y), text, fill="black")
        y += CAPTION_PX
        if strip is not None:
            image.paste(Image.fromarray(strip), (4, y))
            y += strip.shape[0] + 4
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_gallery(path: str | Path, results: list[dict[str, Any]], locate: Callable[[str], str | None],
                  num_frames: int = 4, height: int = 96, title: str = "search results") -> Path:
    """Write the gallery of `results` (search's [{"query", "results": [{"rank", "id", "score"}]}]) to `path`
    (.html or .png, atomically); `locate` maps a video id to its file (or None). Returns the path."""
    path, title = check_gallery_path(path), printable(title)
    ids = dict.fromkeys(hit["id"] for result in results for hit in result["results"])
    strips = {video_id: thumbnail_strip(locate(video_id), num_frames, height) for video_id in ids}
    render = _png(results, strips, title) if path.suffix.lower() == ".png" else \
        _html(results, strips, title).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(render))
    return path
