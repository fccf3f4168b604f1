"""What a user can get wrong, and the one way every command reports it: one line, exit status 2.

Each component raises its own subclass of `UserError` (`ConfigError`, `CheckpointError`,
`SourceError`, ...) with a message that names the key, file or option and what was expected;
every `python -m cpt.<command>` turns it into `error: <message>` on stderr and exit status 2, before
anything is written where the command can tell in advance.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import NoReturn


class UserError(Exception):
    """Bad input (a config value, a path, a file, a checkpoint): reported as one line."""


def one_line(err: BaseException) -> str:
    """An error as one line, with the first line of its cause when that adds something."""
    message = " ".join(str(err).split())
    cause = err.__cause__
    if cause is not None and str(cause).split("\n")[0] not in message:
        message += f" ({str(cause).splitlines()[0]})"
    return message


def exit_with(err: BaseException) -> NoReturn:
    """`error: <one line>` on stderr, exit status 2."""
    print(f"error: {one_line(err)}", file=sys.stderr)
    sys.exit(2)


@contextlib.contextmanager
def reported(*also: type[BaseException]) -> Iterator[None]:
    """A command's body: a `UserError` (or one of `also`, e.g. Hydra's composition errors) ends
    the process with `exit_with`."""
    try:
        yield
    except (UserError, *also) as err:
        exit_with(err)
