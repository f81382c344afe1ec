"""infer.py serve, run as its own process on 127.0.0.1 over a store of 5 generated videos, two of them with
hostile file names (HTML in them): the JSON API answers what `infer.py search --json` prints, plays videos by
range requests, and answers traversal attempts, unknown ids and bad queries with JSON 404 / 400; a store being
written is served read-only with a notice. In headless Chromium (Debian's, driven by playwright) the page shows
the expected ids for a typed query, the names as text, plays a video, and follows "more like this".

The model is conftest's meanp_store's (a random tiny CLIP with meanP): rankings are arbitrary but deterministic,
so the expected ones are what `infer.py search --json` returns on the same store.
"""
from __future__ import annotations

import http.client
import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import infer
from tests.conftest import free_port, meanp_index_argv
from utils.inference.embedding_store import EmbeddingStore
from utils.inference.gallery import thumbnail_strip
from utils.inference.server import host_notice

REPO = Path(__file__).resolve().parents[1]
HOSTILE = ['<img src=x onerror="window.pwned=1">.mp4', "a&amp;b \"double\" 'single' <b>.mp4"]
NAMES = [*HOSTILE, "sub/plain one.mp4", "video3.mp4", "video4.mp4"]
QUERY = "a red circle"
START_SECONDS = 120
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@dataclass
class Store:
    root: Path
    videos: Path


@dataclass
class Server:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        """Stop it (SIGTERM) and return its stderr."""
        self.process.terminate()
        return self.process.communicate(timeout=30)[1]


def get(server: Server, target: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of GET `target` sent as written (http.client normalises nothing)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", target, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def api(server: Server, path: str, **params) -> tuple[int, dict]:
    status, _, body = get(server, f"{path}?{urllib.parse.urlencode(params)}")
    return status, json.loads(body)


def start_server(store: Path, *extra: str) -> Server:
    """`python infer.py serve --store STORE` on a free port, once it answers /api/info."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "infer.py", "serve", "--store", str(store), "--port", str(port),
                                "--device", "cpu", *extra], cwd=REPO, stderr=subprocess.PIPE, text=True)
    server = Server(process, port)
    deadline = time.time() + START_SECONDS
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"infer.py serve exited with {process.returncode}: {process.communicate()[1]}")
        try:
            if get(server, "/api/info")[0] == 200:
                return server
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"infer.py serve did not answer within {START_SECONDS} s: {server.stop()}")


def search_json(store: Path, query: str, k: int) -> list[dict]:
    return infer.main(["search", "--store", str(store), "--top_k", str(k), "--json", query])[0]["results"]


@pytest.fixture(scope="module")
def store(meanp_store, tmp_path_factory) -> Store:
    clip, generated, _ = meanp_store
    root = tmp_path_factory.mktemp("serve")
    videos = root / "videos"
    for name, source in zip(NAMES, sorted(generated.glob("*.mp4"))):
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, videos / name)
    infer.main(meanp_index_argv(clip, videos, root / "store"))
    return Store(root / "store", videos)


@pytest.fixture(scope="module")
def server(store):
    server = start_server(store.root)
    yield server
    assert f"serving {len(NAMES)} videos of {store.root}" in server.stop()


def test_api_search_returns_what_search_json_prints(server, store):
    for query, k in ((QUERY, 3), ("a green square moves left", 5)):
        status, body = api(server, "/api/search", q=query, k=k)
        assert status == 200 and body["query"] == query
        expected = search_json(store.root, query, k)
        assert [(h["rank"], h["id"]) for h in body["results"]] == [(h["rank"], h["id"]) for h in expected]
        # the same 6 decimals (another process may sum in another order: the last one may differ by 1)
        assert np.allclose([h["score"] for h in body["results"]], [h["score"] for h in expected], atol=1.1e-6)


@pytest.mark.parametrize("target", [
    "/video?id=../../../../etc/passwd", "/video?id=%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/video?id=/etc/passwd",
    "/video?id=sub%2F..%2F..%2Fstore%2Fids.json", "/video?id=sub/../video3.mp4", "/video/../../etc/passwd",
    "/video/..%2F..%2Fetc%2Fpasswd", "/video/video3.mp4", "/thumb?id=..%2Fstore%2Fmetadata.json",
    "/video?id=nope.mp4", "/video?id=VIDEO3.MP4", "/api/similar?id=../video3.mp4", "/%2e%2e/infer.py",
    "/app.js/../../infer.py", "/style.css%2F..%2F..%2Finfer.py", "/web/index.html", "/ids.json",
])
def test_traversal_attempts_and_unknown_ids_get_404(server, target):
    status, headers, body = get(server, target)
    assert status == 404 and headers["content-type"] == "application/json", (target, status, body[:80])
    assert set(json.loads(body)) == {"error"}


def test_videos_by_id_with_range_requests(server, store):
    for name in NAMES:
        content = (store.videos / name).read_bytes()
        target = "/video?" + urllib.parse.urlencode({"id": name})
        status, headers, body = get(server, target)
        assert status == 200 and body == content and headers["accept-ranges"] == "bytes"
        status, headers, body = get(server, target, {"Range": "bytes=100-299"})
        assert status == 206 and body == content[100:300]
        assert headers["content-range"] == f"bytes 100-299/{len(content)}"


def test_a_stored_video_whose_file_is_gone_is_a_404_with_a_grey_thumbnail(server, store):
    path = store.videos / "video4.mp4"
    path.rename(path.with_suffix(".moved"))
    try:
        status, _, body = get(server, "/video?id=video4.mp4")
        assert status == 404 and "no longer where the store found it" in json.loads(body)["error"]
        status, _, body = get(server, "/thumb?id=video4.mp4")  # not asked for before (thumbnails are cached)
        assert status == 200 and np.asarray(Image.open(io.BytesIO(body))).std() < 3  # grey
    finally:
        path.with_suffix(".moved").rename(path)


@pytest.mark.parametrize("path, params, says", [
    ("/api/search", {"q": "", "k": 3}, "q must be"), ("/api/search", {"q": "   "}, "q must be"),
    ("/api/search", {"k": 3}, "missing parameter q"), ("/api/search", {"q": "x" * 1001}, "q must be"),
    ("/api/search", {"q": QUERY, "k": 0}, "k must be"), ("/api/search", {"q": QUERY, "k": "3.5"}, "k must be"),
    ("/api/search", {"q": QUERY, "k": "-1"}, "k must be"), ("/api/search", {"q": QUERY, "k": 10**6}, "k must be"),
    ("/api/search", {"q": QUERY, "k": "\u00b2"}, "k must be"),
    ("/api/search", {"q": QUERY, "search": "fast"}, "search must be one of auto, exact, ann"),
    ("/api/search", {"q": QUERY, "search": "ann"}, "build-ann"),
    ("/api/similar", {"k": 2}, "missing parameter id"), ("/video", {}, "missing parameter id"),
    ("/api/similar", {"id": "video3.mp4", "k": "x"}, "k must be"),
])
def test_bad_queries_get_a_json_error_with_400(server, path, params, says):
    status, body = api(server, path, **params)
    assert status == 400 and says in body["error"], body


def test_more_like_this_ranks_the_other_videos_by_stored_cosine(server, store):
    ids, embeddings = EmbeddingStore(store.root).load()
    unit = embeddings.astype(np.float32) / np.linalg.norm(embeddings.astype(np.float32), axis=1, keepdims=True)
    for row, video_id in enumerate(ids):
        status, body = api(server, "/api/similar", id=video_id, k=3)
        cosine = unit @ unit[row]
        expected = [ids[i] for i in np.argsort(-cosine) if i != row][:3]
        assert status == 200 and body["id"] == video_id and [h["id"] for h in body["results"]] == expected
        assert np.allclose([h["score"] for h in body["results"]], sorted(cosine[ids.index(e)] for e in expected)[::-1],
                           atol=1e-5)


def test_thumbnails_are_the_sampled_frames_and_the_page_has_a_content_security_policy(server, store):
    status, headers, body = get(server, "/thumb?" + urllib.parse.urlencode({"id": HOSTILE[0]}))
    assert status == 200 and headers["content-type"] == "image/jpeg"
    shown = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"), dtype=np.float32)
    strip = thumbnail_strip(str(store.videos / HOSTILE[0]), 4, 72)[0]
    assert shown.shape == strip.shape and np.abs(shown - strip).mean() < 8  # JPEG
    status, headers, body = get(server, "/")
    assert status == 200 and b'<script src="/app.js"' in body
    assert "script-src 'self'" in headers["content-security-policy"] and headers["x-content-type-options"] == "nosniff"
    # a page on another site that resolves its own name to 127.0.0.1 (DNS rebinding) is refused
    assert get(server, "/api/info", {"Host": f"evil.example:{server.port}"})[0] == 400
    assert get(server, "/api/info", {"Host": f"localhost:{server.port}"})[0] == 200


def test_a_store_being_written_is_served_read_only_with_a_notice(store):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in store.root.iterdir() if not p.name.startswith(".lock"))
    with EmbeddingStore(store.root).writer_lock():  # what `infer.py index` holds while it writes
        writing = start_server(store.root)
        status, info = api(writing, "/api/info")
        stderr = writing.stop()
    assert status == 200 and info["count"] == len(NAMES)
    assert "is being written by process" in info["notice"] and "read-only" in info["notice"]
    assert info["notice"] in stderr
    assert sorted((p.name, p.stat().st_mtime_ns) for p in store.root.iterdir()
                  if not p.name.startswith(".lock")) == before


def test_writer_is_whoever_holds_the_lock_not_a_stale_owner_record(tmp_path):
    store = EmbeddingStore(tmp_path / "store")
    assert store.writer() is None
    with store.writer_lock():
        assert store.writer()["pid"] > 0
    assert store.writer() is None
    (store.root / ".lock.owner").write_text('{"pid": 1, "host": "gone"}')  # left by a killed writer
    assert store.writer() is None


def test_other_hosts_are_announced_and_a_port_in_use_is_one_line(store):
    assert host_notice("127.0.0.1") is None and host_notice("::1") is None and host_notice("localhost") is None
    assert "reachable from other machines" in host_notice("0.0.0.0")
    assert "reachable from other machines" in host_notice("192.168.1.20")
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        with pytest.raises(SystemExit, match=f"^error: cannot listen on 127.0.0.1:{port}: Address already in use$"):
            infer.main(["serve", "--store", str(store.root), "--port", str(port)])
    with pytest.raises(SystemExit, match="must be >= 0"):
        infer.main(["serve", "--store", str(store.root), "--port", "-1"])


def chromium() -> str:
    """Debian's chromium; the test is skipped only where it is not installed (scripts/test.sh installs it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed and could not be: bash scripts/test.sh installs Debian's package "
                    "when run as root (apt-get install chromium)")
    return path


def card_ids(page) -> list[list[str]]:
    """[data-id, the caption's id text] of every result card shown."""
    page.wait_for_selector("figure.result")  # times out (the test fails) when the page shows no results
    return page.eval_on_selector_all("figure.result",
                                     "cards => cards.map(c => [c.dataset.id, c.querySelector('.id').textContent])")


def wait_until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll `expression` with page.evaluate until it is truthy (page.wait_for_function polls with eval, which
    the page's Content-Security-Policy refuses once the condition is not true at the first try)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


@pytest.mark.browser
def test_in_chromium_a_typed_query_shows_the_expected_videos_which_play(server, store, tmp_path):
    from playwright.sync_api import sync_playwright

    expected = [hit["id"] for hit in search_json(store.root, QUERY, len(NAMES))]
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS)
        context.set_default_timeout(20_000)
        page = context.new_page()
        page.goto(server.url + "/")
        page.fill("#q", QUERY)
        page.fill("#k", str(len(NAMES)))
        with page.expect_navigation():
            page.press("#q", "Enter")
        assert card_ids(page) == [[video_id, video_id] for video_id in expected]  # hostile names shown as text
        assert page.evaluate("document.querySelectorAll('img[src=\"x\"], b').length") == 0
        assert page.evaluate("window.pwned === undefined")
        assert urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query) == {
            "q": [QUERY], "k": [str(len(NAMES))], "search": ["auto"]}
        wait_until(page, "[...document.querySelectorAll('img.thumb')].every(i => i.complete && i.naturalWidth)")

        page.reload()  # the search is the URL
        assert [video_id for video_id, _ in card_ids(page)] == expected

        first = page.locator("figure.result").first
        first.locator(".play").click()
        wait_until(page, "(() => { const v = document.querySelector('figure.result video');"
                         " return v && !v.paused && v.currentTime > 0.2; })()")
        seeked = page.evaluate("""() => new Promise(done => { const v = document.querySelector('figure.result video');
            v.addEventListener('seeked', () => done(v.currentTime), {once: true}); v.currentTime = 1.0; })""")
        assert seeked == pytest.approx(1.0, abs=0.3)

        with page.expect_navigation():
            first.locator(".similar").click()
        similar = api(server, "/api/similar", id=expected[0], k=len(NAMES))[1]["results"]
        assert [video_id for video_id, _ in card_ids(page)] == [hit["id"] for hit in similar]
        assert expected[0] not in [video_id for video_id, _ in card_ids(page)]
        context.close()
