"""Files written whole or not at all: a reader (another rank, another run of a grid) never sees
half of one, and writers of the same deterministic file side by side do no harm.

Every file cpt writes for others to read goes through `written_atomically` (tokenizers, quality
scores, task files, Lightning checkpoints); sharded checkpoint folders are swapped in whole by
`cpt.checkpoints.sharded.replace`, and prepared datasets by renaming their folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def written_atomically(
    path: Path, *, durable: bool = False, move: Callable[[Path, Path], None] | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; on success rename it into place (after
    an fsync with `durable`, so a power loss cannot leave an empty file under the name; `move`
    instead of a rename where `path` needs more, e.g. a folder to swap), on failure remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if durable:
            with tmp.open("rb+") as handle:
                os.fsync(handle.fileno())
        (move or os.replace)(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with written_atomically(path) as tmp:
        tmp.write_text(text)
