"""Pack a folder of videos into an LMDB: key = file basename, value = the file's bytes.

    python -m preprocess.folder_to_lmdb --input_root videos_compressed --output videos.lmdb

Read it with `--lmdb_dataset videos.lmdb`. Keys already in the LMDB are skipped, so an interrupted run can be
repeated. Two videos with the same basename are an error (the keys would collide).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import lmdb
from tqdm import tqdm

from dataloaders.sources import list_video_files

BATCH_BYTES = 256 << 20  # commit a transaction every this many bytes


def folder_to_lmdb(input_root: str, output: str, progress: bool = True) -> int:
    """Write every video under `input_root` into the LMDB at `output`; returns how many were added."""
    files = list_video_files(input_root)
    by_name: dict[str, str] = {}
    for path in files:
        name = os.path.basename(path)
        if name in by_name:
            raise ValueError(f"two videos named {name}: {by_name[name]} and {path}; LMDB keys are basenames, "
                             f"rename one of them")
        by_name[name] = path
    total = sum(os.path.getsize(path) for path in files)
    existing = os.path.getsize(os.path.join(output, "data.mdb")) if os.path.exists(output) else 0
    added = 0
    with lmdb.open(output, map_size=int((total + existing) * 1.2) + (64 << 20)) as env:
        with env.begin() as txn:
            present = {key.decode() for key in txn.cursor().iternext(keys=True, values=False)}
        todo = [(name, path) for name, path in by_name.items() if name not in present]
        txn, pending = env.begin(write=True), 0
        for name, path in tqdm(todo, desc="videos -> lmdb", disable=not progress):
            with open(path, "rb") as file:
                data = file.read()
            txn.put(name.encode(), data)
            added, pending = added + 1, pending + len(data)
            if pending >= BATCH_BYTES:
                txn.commit()
                txn, pending = env.begin(write=True), 0
        txn.commit()
    return added


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input_root", required=True, help="folder of videos (searched recursively)")
    parser.add_argument("--output", required=True, help="LMDB folder to create or extend")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.input_root):
        print(f"error: {args.input_root} is not a folder", file=sys.stderr)
        return 2
    try:
        added = folder_to_lmdb(args.input_root, args.output)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"added {added} videos to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
