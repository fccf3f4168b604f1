"""Run an analysis notebook headlessly on a sweep: its `parameters` cell gets the sweep folder."""

from __future__ import annotations

from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def execute(
    notebook: str | Path, sweep: str | Path, out: str | Path | None = None, timeout: int = 600
) -> Path:
    """Execute `notebook` with `sweep = <folder>`; save the executed copy (outputs included) to `out`."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ValueError(f"{notebook}: no cell tagged 'parameters'")
    cells[0].source = f"sweep = {str(Path(sweep).resolve())!r}"
    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(sweep)}}
    ).execute()
    target = Path(out) if out else Path(sweep) / Path(notebook).name
    nbformat.write(nb, str(target))
    return target
