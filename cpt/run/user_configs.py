"""Configs kept outside the repository: a folder of one's own, named by Hydra's search path.

    python -m cpt.train hydra.searchpath=[file:///home/me/cpt_conf] experiment=my_cpt

adds the folder's group files (`experiment/my_cpt.yaml`, `data/my_corpus.yaml`, ...) to the built-in
ones of `conf/`, for `cpt.train`, `cpt.plan` and `cpt.data.prepare` alike. Hydra reads `conf/` first
and neither checks that the folder exists nor says when one of its files has a built-in file's name
(the built-in one wins, silently): both are one line here, before anything is composed or written.
"""

from __future__ import annotations

from pathlib import Path

from cpt.errors import UserError

CONF = Path(__file__).resolve().parents[2] / "conf"
KEY = "hydra.searchpath"


class SearchPathError(UserError):
    """A `hydra.searchpath` folder that is missing or hides a file behind a built-in one."""


def user_folders(argv: list[str]) -> list[Path]:
    """The `file://` folders of every `hydra.searchpath=[...]` override (relative: to the working
    directory, as Hydra reads them); `pkg://` entries are packages, not folders."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    given = [a for a in argv if a.lstrip("+~").startswith(f"{KEY}=")]
    if not given:
        return []
    try:
        overrides = OverridesParser.create().parse_overrides(given)
    except HydraException:
        return []  # Hydra reports the malformed override itself, as for any other key
    folders = []
    for override in overrides:
        value = override.value()
        for entry in value if isinstance(value, list) else [value]:
            if isinstance(entry, str) and entry.startswith("file://"):
                folders.append(Path(entry.removeprefix("file://")))
    return folders


def check_search_path(argv: list[str]) -> list[Path]:
    """Each user folder exists and none of its files has the name of a built-in one."""
    folders = user_folders(argv)
    for folder in folders:
        if not folder.is_dir():
            raise SearchPathError(
                f"{KEY}: file://{folder}: no such folder; expected a folder of your own configs "
                "(e.g. experiment/<name>.yaml, data/<name>.yaml), best named by its absolute path"
            )
        for path in sorted(folder.rglob("*.yaml")):
            name = path.relative_to(folder)
            if (CONF / name).exists():
                raise SearchPathError(
                    f"{KEY}: {path} has the name of the built-in conf/{name}, which Hydra reads "
                    f"first, so yours would be ignored; rename it (e.g. {name.parent}/my_{name.name})"
                )
    return folders
