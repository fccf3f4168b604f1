"""What a source's files hold, independent of where they lie and when they were touched.

A prepared dataset is named by a fingerprint of its source (`cpt.data.sources.fingerprint`). It
hashes each file's name relative to the source's folder and a digest of its bytes, so a corpus
moved to another folder, re-synced or touched with the same contents keeps its tokens, and any
change of contents makes new ones. Reading every byte of a large corpus on every run would cost
minutes; a digest is cached by (absolute path, size, mtime) in `$CPT_CACHE` (default
`~/.cache/cpt/digests.json`), so a file is read once per version on each machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from cpt.files import write_text_atomic

CHUNK = 1 << 22


def cache_path() -> Path:
    return Path(os.environ.get("CPT_CACHE", Path.home() / ".cache" / "cpt")) / "digests.json"


def file_digests(paths: list[Path]) -> list[str]:
    """The sha256 of each file's bytes, from the cache where its path, size and mtime match."""
    cache_file = cache_path()
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    found, changed = [], False
    for path in paths:
        st = path.stat()
        key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        if key not in cache:
            h = hashlib.sha256()
            with path.open("rb") as handle:
                while block := handle.read(CHUNK):
                    h.update(block)
            cache[key], changed = h.hexdigest(), True
        found.append(cache[key])
    if changed:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cache_file, json.dumps(cache, sort_keys=True))
    return found
