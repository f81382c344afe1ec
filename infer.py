"""Use a trained model on your own videos: embed a folder of videos, search it by text, export text embeddings,
and draw what STOP's prompts attend to.

    python infer.py index --checkpoint runs/x/ckpt_best.pt --videos MY_VIDEOS --output my_index
    torchrun --nproc_per_node 4 infer.py index ...    (the videos sharded over the processes)
    python infer.py search --store my_index "a dog catches a frisbee" [--top_k 5] [--json] [--gallery out.html]
    python infer.py build-ann --store my_index [--kind hnsw]   (a FAISS index search then uses on large stores)
    python infer.py embed-text --store my_index --output texts.npy "a dog" "a cat"
    python infer.py serve --store my_index [--port 8000]   (a search page in the browser, http://127.0.0.1:8000/)
    python infer.py visualize --checkpoint runs/x/ckpt_best.pt --video clip.mp4 --output clip_prompts.png

The model flags and frame count come from the checkpoint (override them with the same flags as main.py);
`search`, `serve` and `embed-text --store` rebuild the model that wrote the store. See docs/INFERENCE.md.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dataloaders.video_files import printable, stored_video_locator, videos_in_csv, videos_in_folder
from dataloaders.video_input import read_video_tensor
from dataloaders.video_reader import VideoReadError
from utils.atomic_file import write_atomic
from utils.engine.run.cli import USER_ERRORS, FlagError, OneLineArgumentParser, errors_as_one_line
from utils.engine.runtime.distributed import cleanup_distributed, init_distributed, raise_if_any_failed
from utils.inference.ann_index import (
    ANN_RECORD,
    EXACT_BELOW,
    KINDS,
    RECALL_K,
    SEARCH_MODES,
    build_ann,
    default_params,
    ranked_hits,
    top_k,
)
from utils.inference.embedding_store import EmbeddingStore, is_store_file
from utils.inference.gallery import check_gallery_path, write_gallery
from utils.inference.indexing import BATCH_SIZE, CHUNK_SIZE, check_output_folder, index_videos
from utils.inference.inference_model import InferenceModel, add_inference_model_args, load_inference_model
from utils.inference.prompt_visualization import write_prompt_figure
from utils.output_file import OutputFileError, check_output_file

log = logging.getLogger("infer")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    index = commands.add_parser("index", help="embed videos into an embedding store (resumable)")
    inputs = index.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--videos", help="folder of videos (searched recursively; ids = relative paths)")
    inputs.add_argument("--csv", help="CSV listing the videos (ids = the entries as written)")
    index.add_argument("--csv_column", default=None,
                       help="column of the video paths/names (default: video_path, path, video or video_id)")
    index.add_argument("--video_dir", default=None,
                       help="find the CSV's entries under this folder, by relative path or by name with or "
                            "without extension (default: paths relative to the CSV's folder)")
    index.add_argument("--output", required=True,
                       help="store folder (created; re-running adds what is missing). One index process writes a "
                            "store at a time (its .lock); a second one stops at once, naming the first")
    index.add_argument("--batch_size", type=int, default=None,
                       help=f"videos per forward (default {BATCH_SIZE['cpu']} on the CPU, {BATCH_SIZE['cuda']} "
                            "on a GPU)")
    index.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                       help="DataLoader worker processes decoding videos")
    index.add_argument("--chunk_size", type=int, default=CHUNK_SIZE,
                       help="videos per part written to the store (an interruption loses at most one part)")
    add_inference_model_args(index)

    store_model = ("The model is the one that wrote the store (its metadata.json); model flags given here override "
                   "it, and a model whose embeddings would not be comparable is refused.")
    search = commands.add_parser("search", help="rank the videos of a store for text queries",
                                 description=store_model)
    search.add_argument("--store", required=True, help="store folder written by `index`")
    search.add_argument("texts", nargs="*", metavar="QUERY", help="text queries")
    search.add_argument("--queries", default=None, help="file of queries, one per line")
    search.add_argument("--top_k", type=int, default=10, help="results per query")
    search.add_argument("--json", action="store_true", help="print JSON instead of text")
    search.add_argument("--search", choices=SEARCH_MODES, default="auto",
                        help=f"exact: score every video; ann: the store's FAISS index (build-ann); auto (default): "
                             f"the index for stores of {EXACT_BELOW} videos or more when it is up to date, else exact")
    search.add_argument("--gallery", default=None,
                        help="also write the results as thumbnail strips: a self-contained .html (or .png)")
    search.add_argument("--gallery_frames", type=int, default=4, help="frames per thumbnail strip")
    search.add_argument("--thumb_px", type=int, default=96, help="height of a thumbnail in pixels")
    add_inference_model_args(search)

    ann = commands.add_parser("build-ann", help="build a FAISS nearest-neighbour index of a store (needs faiss-cpu)",
                              description="Writes STORE/ann.faiss and STORE/ann.json (with its recall@10 against "
                                          "exact search).")
    ann.add_argument("--store", required=True, help="store folder written by `index`")
    ann.add_argument("--kind", choices=KINDS, default="hnsw",
                     help="flat: exact inner product; ivf: inverted lists over k-means cells; hnsw (default): graph")
    ann.add_argument("--nlist", type=int, default=None, help="ivf: cells (default about 4 sqrt(N))")
    ann.add_argument("--nprobe", type=int, default=None, help="ivf: cells searched per query (default nlist / 16)")
    ann.add_argument("--hnsw_m", type=int, default=None, help="hnsw: links per node (default 32)")
    ann.add_argument("--ef_construction", type=int, default=None, help="hnsw: build beam (default 80)")
    ann.add_argument("--ef_search", type=int, default=None, help="hnsw: search beam (default 64)")
    ann.add_argument("--recall_queries", default=None,
                     help="a .npy [Q, E] of queries for the recall (e.g. embed-text output); default stored videos")
    ann.add_argument("--num_recall_queries", type=int, default=500,
                     help="stored videos drawn as recall queries when --recall_queries is not given")
    ann.add_argument("--rebuild", action="store_true", help="replace the store's ANN index")

    embed = commands.add_parser("embed-text", help="text embeddings to a .npy file",
                                description="With --store: " + store_model)
    embed.add_argument("texts", nargs="*", metavar="TEXT", help="texts")
    embed.add_argument("--queries", default=None, help="file of texts, one per line")
    embed.add_argument("--output", required=True, help=".npy file: float32 [N, E] raw features, in input order")
    embed.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    embed.add_argument("--store", default=None, help="use the model that wrote this store (else --checkpoint)")
    add_inference_model_args(embed)

    serve = commands.add_parser("serve", help="a search page over a store in the browser (and a JSON API)",
                                description=store_model + " Binds 127.0.0.1 unless --host says otherwise. See "
                                                          "docs/INFERENCE.md.")
    serve.add_argument("--store", required=True, help="store folder written by `index`")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the "
                            "network, with no password)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (0: any free one)")
    serve.add_argument("--top_k", type=int, default=12, help="results per search unless the page asks for more")
    serve.add_argument("--thumb_frames", type=int, default=4, help="frames per thumbnail strip")
    serve.add_argument("--thumb_px", type=int, default=72, help="height of a thumbnail in pixels")
    add_inference_model_args(serve)

    visualize = commands.add_parser("visualize", help="PNG of STOP's spatial region mask and frame weights")
    visualize.add_argument("--video", required=True, help="video file")
    visualize.add_argument("--output", required=True, help="PNG file (the numbers go to the same name .json)")
    visualize.add_argument("--overwrite", action="store_true", help="replace existing --output files")
    visualize.add_argument("--frame_px", type=int, default=160, help="side of one frame panel in pixels")
    add_inference_model_args(visualize)
    return parser


# Flag ranges, checked when the flags are parsed (before any model is loaded): (command, flag, minimum).
MINIMUMS = [("index", "batch_size", 1), ("index", "chunk_size", 1), ("index", "num_workers", 0),
            ("search", "top_k", 1), ("search", "gallery_frames", 1), ("search", "thumb_px", 1),
            ("serve", "port", 0), ("serve", "top_k", 1), ("serve", "thumb_frames", 1), ("serve", "thumb_px", 1),
            ("visualize", "frame_px", 1)] + [
    ("build-ann", flag, 1) for flag in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search",
                                         "num_recall_queries")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The sub-command and its flags, ranges checked; errors are one `error: ...` line."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        for command, flag, minimum in MINIMUMS:
            value = getattr(args, flag, None)
            if args.command == command and value is not None and value < minimum:
                parser.error(f"{command} --{flag} must be >= {minimum}, got {value}")
    except FlagError as error:
        raise SystemExit(f"error: {error}") from None
    return args


# ------------------------------------------------------------------------------------------------ index
def run_index(args: argparse.Namespace) -> dict[str, Any]:
    """Embed the videos not yet in the store; returns the summary of index_videos."""
    if args.csv:
        videos = videos_in_csv(args.csv, args.csv_column, args.video_dir)
        source = {"csv": str(Path(args.csv).resolve()),
                  "video_dir": str(Path(args.video_dir).resolve()) if args.video_dir else None}
    else:
        videos = videos_in_folder(args.videos)
        source = {"videos": str(Path(args.videos).expanduser().resolve())}
    check_output_folder(args.output)
    ctx = init_distributed(args.device)  # one process, or one rank of torchrun's / srun's process group
    args.device = str(ctx.device)
    try:
        with contextlib.ExitStack() as held:
            error = None
            try:
                if ctx.is_main:  # the whole run: one writer per store (the other ranks write their own parts)
                    held.enter_context(EmbeddingStore(args.output).writer_lock())
                trained = load_inference_model(args)
            except USER_ERRORS as failure:
                error = failure
            raise_if_any_failed(error)
            return index_videos(args.output, trained, videos, source, args.batch_size, args.num_workers,
                                args.chunk_size, ctx.rank, ctx.world_size)
    finally:
        cleanup_distributed()


# ------------------------------------------------------------------------------------------- text side
def _read_texts(texts: list[str], queries_file: str | None) -> list[str]:
    texts = [t for t in texts if t.strip()]
    if queries_file:
        path = Path(queries_file)
        if not path.is_file():
            raise SystemExit(f"error: --queries: file not found: {path}")
        texts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not texts:
        raise SystemExit("error: no text given: pass texts as arguments or a file with --queries")
    return texts


def _open_store(path: str) -> tuple[EmbeddingStore, dict[str, Any]]:
    store = EmbeddingStore(path)
    metadata = store.metadata
    if metadata is None:
        raise SystemExit(f"error: --store: no embedding store at {path} (write one with `python infer.py index`)")
    return store, metadata


def _stored_embeddings(store: EmbeddingStore) -> tuple[list[str], np.ndarray]:
    ids, embeddings = store.load()
    if embeddings is None:
        raise SystemExit(f"error: --store {store.root} holds no embeddings (see its failed.csv)")
    return ids, embeddings


def _model_of_store(args: argparse.Namespace, metadata: dict[str, Any]) -> InferenceModel:
    """The model that wrote the store: flags not given take the store's values; SystemExit if it differs."""
    written_by = metadata["model"]
    defaults = {"checkpoint": written_by["checkpoint"], "pretrained_clip_name": written_by["clip"],
                "max_words": written_by["max_words"], **written_by["config"]}
    for name, value in defaults.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    trained = load_inference_model(args)
    differences = trained.differences_from(written_by)
    if differences:
        raise SystemExit(f"error: the model differs from the one that wrote {args.store} (in "
                         f"{', '.join(differences)}); its text embeddings would not match the videos")
    return trained


def run_search(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Print (and return) the top-k videos per query: [{"query", "results": [{"rank", "id", "score"}]}]; with
    --gallery also write them as thumbnail strips."""
    queries = _read_texts(args.texts, args.queries)
    if args.gallery:
        check_gallery_path(args.gallery)
    store, metadata = _open_store(args.store)
    ids, embeddings = _stored_embeddings(store)
    trained = _model_of_store(args, metadata)
    scores, rows = top_k(args.store, ids, embeddings, trained.encode_texts(queries), args.top_k, args.search)
    results = [{"query": query, "results": ranked_hits(ids, s, r)} for query, s, r in zip(queries, scores, rows)]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for result in results:
            print(result["query"])
            for hit in result["results"]:
                print(f"{hit['rank']:4d}  {hit['score']:.4f}  {printable(hit['id'])}")
    if args.gallery:
        written = write_gallery(args.gallery, results, stored_video_locator(metadata["source"]),
                                args.gallery_frames, args.thumb_px, f"search results: {args.store}")
        log.info(f"wrote the gallery {written}")
    return results


def run_build_ann(args: argparse.Namespace) -> dict[str, Any]:
    """Build the store's FAISS index; print and return its record (ann.json: recall@10 against exact search)."""
    store, _ = _open_store(args.store)
    if (store.root / ANN_RECORD).is_file() and not args.rebuild:
        raise SystemExit(f"error: --store {args.store} already has an ANN index ({store.root / ANN_RECORD}); pass "
                         "--rebuild to replace it")
    ids, embeddings = _stored_embeddings(store)
    recall_queries = None
    if args.recall_queries:
        if not Path(args.recall_queries).is_file():
            raise SystemExit(f"error: --recall_queries: file not found: {args.recall_queries}")
        recall_queries = np.load(args.recall_queries, allow_pickle=False)
    params = {name: getattr(args, name) for name in default_params(args.kind, len(ids))
              if getattr(args, name) is not None}
    record = build_ann(store.root, ids, embeddings, args.kind, params, recall_queries, args.num_recall_queries)
    print(f"{record['kind']} index of {record['count']} videos {record['params']} built in "
          f"{record['build_seconds']} s: recall@{RECALL_K} {record[f'recall_at_{RECALL_K}']} against exact search "
          f"({record['recall_queries']} as queries); wrote {store.root / ANN_RECORD}")
    return record


def _inputs(args: argparse.Namespace) -> list[tuple[str | None, str]]:
    """(path or None, what it is) of the files a command reads: never replaced by its output."""
    return [(getattr(args, flag, None), f"the --{flag} input") for flag in
            ("video", "queries", "checkpoint", "pretrained_clip_name")]


def _check_output(output: Path, args: argparse.Namespace, flag: str = "--output") -> Path:
    """`output` if the command may write it (utils.output_file), and not a file of an embedding store."""
    if is_store_file(output):
        raise OutputFileError(f"{flag} {output} is a file of the embedding store {output.parent}; it is never "
                              "replaced: choose another name")
    return check_output_file(output, flag, _inputs(args), args.overwrite)


def run_embed_text(args: argparse.Namespace) -> np.ndarray:
    """Write float32 [N, E] raw text features to --output (NAME.npy when it does not end in .npy, as np.save
    names it); returns them."""
    output = Path(args.output)
    output = _check_output(output if output.suffix == ".npy" else output.with_name(output.name + ".npy"), args)
    texts = _read_texts(args.texts, args.queries)
    trained = _model_of_store(args, _open_store(args.store)[1]) if args.store else load_inference_model(args)
    features = trained.encode_texts(texts).numpy()
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, lambda file: np.save(file, features, allow_pickle=False))
    log.info(f"wrote {features.shape[0]} x {features.shape[1]} text embeddings to {output}")
    return features


def run_serve(args: argparse.Namespace) -> None:
    """Serve the store's search page until interrupted (Ctrl-C). A store another process is writing is served
    read-only as it is now, the page saying so."""
    try:
        from utils.inference.server import StoreSearch, bind, serve, store_notice
    except ImportError as error:  # starlette and uvicorn are in requirements.txt; the other commands need neither
        raise SystemExit(f"error: serve needs starlette and uvicorn ({error}): pip install -r requirements.txt"
                         ) from None
    store, metadata = _open_store(args.store)
    ids, embeddings = _stored_embeddings(store)
    notice = store_notice(store, len(ids))
    sock = bind(args.host, args.port)  # a port in use stops the command before the model loads
    trained = _model_of_store(args, metadata)
    serve(StoreSearch(store.root, ids, embeddings, trained.encode_texts, stored_video_locator(metadata["source"]),
                      notice, args.top_k, args.thumb_frames, args.thumb_px), sock, args.host)


# ------------------------------------------------------------------------------------------- visualize
def run_visualize(args: argparse.Namespace) -> dict[str, Any]:
    """Write the PNG and a JSON of the numbers drawn; returns that JSON's content."""
    video_path = Path(args.video)
    if not video_path.is_file():
        raise SystemExit(f"error: --video: file not found: {video_path}")
    output = Path(args.output)
    if output.suffix.lower() == ".json":
        raise OutputFileError(f"--output {output}: the figure's numbers are written to the same name with .json; "
                              "name the figure .png")
    _check_output(output, args)
    _check_output(output.with_suffix(".json"), args, f"--output {output}: its numbers")
    trained = load_inference_model(args)
    config = trained.model.config
    if not (config.uses_stop or config.uses_paper_stop):
        raise SystemExit("error: visualize shows STOP's prompts; this model has none (it needs --prompt dgl "
                         "--temporal_prompt stop or paper)")
    try:
        video, mask = read_video_tensor(str(video_path), trained.max_frames, trained.resolution)
    except VideoReadError as error:
        raise SystemExit(f"error: --video: {error}") from None
    _, details = trained.encode_videos(video[None], mask[None], return_details=True)
    record = {"video": str(video_path), "figure": str(args.output),
              **write_prompt_figure(trained.model, video, mask, details, output, args.frame_px,
                                    printable(video_path.name))}
    write_atomic(output.with_suffix(".json"), lambda file: file.write(json.dumps(record).encode()))
    width, height = record["size_px"]
    log.info(f"wrote {output} ({width} x {height} px) and {output.with_suffix('.json')}")
    return record


COMMANDS = {"index": run_index, "search": run_search, "build-ann": run_build_ann, "embed-text": run_embed_text,
            "serve": run_serve, "visualize": run_visualize}


def main(argv: list[str] | None = None) -> Any:
    """Run the sub-command of `argv` (sys.argv when None) and return its result."""
    args = parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("infer", "utils.inference"):  # this command's and the library's progress lines
        logging.getLogger(name).setLevel(logging.INFO)
    with errors_as_one_line():
        return COMMANDS[args.command](args)


if __name__ == "__main__":
    main()
