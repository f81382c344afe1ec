"""The web app of `infer.py serve`: a search page over one embedding store and its JSON API (Starlette, served by
uvicorn).

Routes (all GET):
  /                             the page (web/index.html, app.js, style.css): a search box, top-k, exact/ANN;
                                the results as thumbnail strips with rank, score and id, each playable in the page
                                and with "more like this". The search is the page's URL (/?q=...&k=...&search=...,
                                /?similar=ID&k=...), so it can be linked and reloaded
  /api/info                     {"store", "count", "default_k", "max_k", "modes", "notice"}
  /api/search?q=&k=&search=     {"query", "results": [{"rank", "id", "score"}]}, what `infer.py search --json` gives
  /api/similar?id=&k=&search=   {"id", "results"}: the stored videos nearest to video `id` (its stored embedding
                                as the query), itself left out
  /video?id=                    the video file, with HTTP range requests (the player seeks)
  /thumb?id=                    its thumbnail strip, JPEG: the frames the model samples (gallery.thumbnail_strip)

Safe by default: a video is looked up by its id among the store's ids, never by a path from the request, so every
other name is a 404; the page builds its elements with textContent and attributes (no text of the store or of a
query is parsed as HTML), under a Content-Security-Policy that runs only this server's own script; a server bound
to a loopback address answers only requests naming 127.0.0.1 or localhost (a DNS-rebinding page cannot reach it);
errors are JSON {"error": message} with a 4xx code. The store is read once, at start, and nothing is written.
"""
from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from utils.engine.run.folder_lock import describe_owner
from utils.inference.ann_index import SEARCH_MODES, AnnError, ranked_hits, top_k
from utils.inference.embedding_store import EmbeddingStore
from utils.inference.gallery import jpeg_bytes, thumbnail_strip

log = logging.getLogger(__name__)
WEB = Path(__file__).with_name("web")  # the page's three files
PAGE_FILES = {"/": ("index.html", "text/html"), "/app.js": ("app.js", "text/javascript"),
              "/style.css": ("style.css", "text/css")}
MAX_K, MAX_QUERY_CHARS = 1000, 1000
THUMB_CACHE = 4096  # thumbnail strips kept in memory (a few kB each)
LOOPBACK_NAMES = ("127.0.0.1", "localhost")
HEADERS = [(b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                        b"media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
                                        b"frame-ancestors 'none'"),
           (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]


class QueryError(ValueError):
    """A request the API cannot answer: `status` 400 (bad parameters) or 404 (no such video)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class ServeError(ValueError):
    """The server cannot start: its address cannot be bound."""


class StoreSearch:
    """A store's videos and the model that wrote them, loaded once: text search, video-to-video search, and the
    video files and thumbnails by id. `encode_texts` maps texts to raw features [Q, E] (InferenceModel's);
    `locate` maps a stored id to its file or None (dataloaders.video_files.stored_video_locator); `notice` is
    shown on the page (e.g. that the store was being written)."""

    def __init__(self, root: str | Path, ids: list[str], embeddings: np.ndarray,
                 encode_texts: Callable[[list[str]], torch.Tensor], locate: Callable[[str], str | None],
                 notice: str | None = None, default_k: int = 12, thumb_frames: int = 4, thumb_px: int = 72):
        self.root, self.ids, self.embeddings = Path(root), ids, embeddings
        self.rows = {video_id: row for row, video_id in enumerate(ids)}
        self.encode_texts, self.locate, self.notice = encode_texts, locate, notice
        self.default_k, self.thumb_frames, self.thumb_px = default_k, thumb_frames, thumb_px
        self._compute = threading.Lock()  # one model forward / search at a time (requests run in threads)
        self.thumbnail = functools.lru_cache(maxsize=THUMB_CACHE)(self._thumbnail)

    def info(self) -> dict[str, Any]:
        return {"store": self.root.name, "count": len(self.ids), "default_k": self.default_k, "max_k": MAX_K,
                "modes": list(SEARCH_MODES), "notice": self.notice}

    def row(self, video_id: str) -> int:
        """The store row of `video_id`; QueryError 404 when the store holds no such id."""
        if video_id not in self.rows:
            raise QueryError("no such video in the store", 404)
        return self.rows[video_id]

    def _ranked(self, queries: torch.Tensor, k: int, mode: str) -> tuple[list[float], list[int]]:
        if mode not in SEARCH_MODES:
            raise QueryError(f"search must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
        scores, rows = top_k(self.root, self.ids, self.embeddings, queries, k, mode)
        return scores[0], rows[0]

    def search(self, text: str, k: int, mode: str = "auto") -> dict[str, Any]:
        """{"query", "results"}: the top-k stored videos for `text`, as `infer.py search --json`."""
        text = text.strip()
        if not text or len(text) > MAX_QUERY_CHARS:
            raise QueryError(f"q must be a text of 1 to {MAX_QUERY_CHARS} characters")
        with self._compute:
            scores, rows = self._ranked(self.encode_texts([text]), k, mode)
        return {"query": text, "results": ranked_hits(self.ids, scores, rows)}

    def similar(self, video_id: str, k: int, mode: str = "auto") -> dict[str, Any]:
        """{"id", "results"}: the k stored videos nearest to video `video_id` by cosine, itself left out."""
        row = self.row(video_id)
        query = torch.from_numpy(self.embeddings[row:row + 1].astype(np.float32))
        with self._compute:
            scores, rows = self._ranked(query, k + 1, mode)
        kept = [(score, other) for score, other in zip(scores, rows) if other != row][:k]
        return {"id": video_id, "results": ranked_hits(self.ids, [s for s, _ in kept], [r for _, r in kept])}

    def _stored_file(self, video_id: str) -> str | None:
        """The file of stored video `video_id` (None when it is gone); QueryError 404 for an id not stored."""
        return self.locate(self.ids[self.row(video_id)])

    def video_file(self, video_id: str) -> str:
        """The file of video `video_id`; QueryError 404 for an unknown id or a file no longer there."""
        path = self._stored_file(video_id)
        if path is None:
            raise QueryError("the video file is no longer where the store found it", 404)
        return path

    def _thumbnail(self, video_id: str) -> bytes:
        """JPEG of the video's thumbnail strip (a grey strip when it cannot be read)."""
        return jpeg_bytes(thumbnail_strip(self._stored_file(video_id), self.thumb_frames, self.thumb_px)[0])


def _k(request: Request, default: int) -> int:
    text = request.query_params.get("k", str(default))
    if not re.fullmatch(r"[0-9]{1,7}", text) or not 1 <= int(text) <= MAX_K:
        raise QueryError(f"k must be a whole number from 1 to {MAX_K}, got {text[:20]!r}")
    return int(text)


def _required(request: Request, name: str) -> str:
    if name not in request.query_params:
        raise QueryError(f"missing parameter {name}")
    return request.query_params[name]


def _json_error(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, HTTPException):
        return JSONResponse({"error": error.detail}, error.status_code)
    return JSONResponse({"error": str(error)}, getattr(error, "status", 400))


class SecurityHeaders:
    """ASGI middleware adding HEADERS (CSP, nosniff, no referrer) to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(search: StoreSearch, host: str = "127.0.0.1") -> Starlette:
    """The app of `search` for a server bound to `host` (a loopback host: requests must name it; see the module
    docstring for the routes)."""

    def page(request: Request) -> Response:
        name, media_type = PAGE_FILES[request.url.path]
        return FileResponse(WEB / name, media_type=media_type, headers={"cache-control": "no-cache"})

    def info(request: Request) -> Response:
        return JSONResponse(search.info())

    def text_search(request: Request) -> Response:
        return JSONResponse(search.search(_required(request, "q"), _k(request, search.default_k),
                                          request.query_params.get("search", "auto")))

    def similar(request: Request) -> Response:
        return JSONResponse(search.similar(_required(request, "id"), _k(request, search.default_k),
                                           request.query_params.get("search", "auto")))

    def video(request: Request) -> Response:
        return FileResponse(search.video_file(_required(request, "id")))

    def thumb(request: Request) -> Response:
        return Response(search.thumbnail(_required(request, "id")), media_type="image/jpeg",
                        headers={"cache-control": "max-age=3600"})

    routes = [*(Route(path, page) for path in PAGE_FILES), Route("/api/info", info),
              Route("/api/search", text_search), Route("/api/similar", similar), Route("/video", video),
              Route("/thumb", thumb)]
    hosts = [*LOOPBACK_NAMES, host] if is_loopback(host) else ["*"]
    return Starlette(routes=routes, exception_handlers={HTTPException: _json_error, QueryError: _json_error,
                                                        AnnError: _json_error},
                     middleware=[Middleware(SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=hosts)])


def store_notice(store: EmbeddingStore, count: int) -> str | None:
    """What the page says of a store another process is writing (None when none is): that it is served as it
    was at start, read-only."""
    writer = store.writer()
    if writer is None:
        return None
    return (f"{store.root} is being written by {describe_owner(writer)}: serving, read-only, the {count} videos "
            "it held at start; restart serve when indexing has finished to search the rest")


def host_notice(host: str) -> str | None:
    """The warning for a server bound to a non-loopback `host` (None for a loopback one)."""
    if is_loopback(host):
        return None
    return (f"--host {host}: the server is reachable from other machines (no password, no encryption) and shows "
            "them every video of the store")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) (port 0: any free one); ServeError saying why it cannot be."""
    sock = None
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except (OSError, OverflowError) as error:
        if sock is not None:
            sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}") from None
    return sock


def serve(search: StoreSearch, sock: socket.socket, host: str) -> None:
    """Serve `search` on `sock` (bound to `host` by `bind`) until interrupted (Ctrl-C, SIGTERM)."""
    for notice in (host_notice(host), search.notice):
        if notice:
            log.warning(notice)
    shown = f"[{host}]" if ":" in host else host
    log.info(f"serving {len(search.ids)} videos of {search.root}: open http://{shown}:{sock.getsockname()[1]}/ "
             "(Ctrl-C stops)")
    uvicorn.Server(uvicorn.Config(create_app(search, host), log_level="warning")).run(sockets=[sock])
