"""Run every notebook in this folder top to bottom and save it WITH its outputs.

    python notebooks/regenerate.py            # all of them
    python notebooks/regenerate.py 01 03      # those whose name starts with 01 or 03

The notebooks are committed with their outputs so that GitHub, nbviewer and an nbconvert
HTML export show what dfsync displays (run panels are static HTML; widgets carry a static
HTML snapshot next to their saved widget state). Run this after any change to what dfsync
shows or does; tests/test_notebooks.py checks the committed outputs still match.

The kernel imports the dfsync of this checkout. 04_postgres and 06_shared_workspace need a
PostgreSQL server: ``DFSYNC_PG_URI`` if set, else a throwaway cluster started for the run (needs
initdb/pg_ctl).
Jupyter's config and runtime dirs point at a temp dir, so nothing is written to your home.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import sys
import tempfile
from collections.abc import Iterator

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent


def kernel_env(tmp: pathlib.Path) -> dict[str, str]:
    home = tmp / "home"
    env = dict(os.environ)
    env.update({
        "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / "jupyter-config"),
        "JUPYTER_DATA_DIR": str(home / "jupyter-data"), "JUPYTER_RUNTIME_DIR": str(home / "jupyter-runtime"),
        "IPYTHONDIR": str(home / "ipython"),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    for d in ("jupyter-config", "jupyter-data", "jupyter-runtime", "ipython"):
        (home / d).mkdir(parents=True, exist_ok=True)
    return env


def execute(path: pathlib.Path, env: dict[str, str], cwd: pathlib.Path | None = None) -> object:
    """Execute ``path`` in a fresh kernel (widget state saved in its metadata); returns the notebook."""
    import nbclient
    import nbformat
    from nbformat.corpus.words import generate_corpus_id

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:  # cell ids (nbformat 4.5) keep diffs of regenerated notebooks small
        cell.setdefault("id", generate_corpus_id())
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=300, store_widget_state=True,
                                     resources={"metadata": {"path": str(cwd or path.parent)}})
    client.execute(env=env, cwd=str(cwd or path.parent))
    return nb


@contextlib.contextmanager
def postgres_uri() -> Iterator[str]:
    if os.environ.get("DFSYNC_PG_URI"):
        yield os.environ["DFSYNC_PG_URI"]
        return
    sys.path.insert(0, str(ROOT))
    from tests.plugins.postgres import throwaway_server

    with throwaway_server() as server:
        yield server.uri


def main(prefixes: list[str]) -> int:
    import nbformat

    paths = sorted(p for p in HERE.glob("*.ipynb") if not prefixes or p.name.startswith(tuple(prefixes)))
    with tempfile.TemporaryDirectory(prefix="dfsync-notebooks-") as tmp, contextlib.ExitStack() as stack:
        env = kernel_env(pathlib.Path(tmp))
        pg = None
        for path in paths:
            extra = {}
            if path.name.startswith(("04", "06")):
                pg = pg or stack.enter_context(postgres_uri())
                extra["DFSYNC_PG_URI"] = pg
            print(f"running {path.name} ...", flush=True)
            nb = execute(path, {**env, **extra})
            errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]  # type: ignore[attr-defined]
            if errors:
                print(f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}", file=sys.stderr)
                return 1
            nbformat.write(nb, path)
            print(f"saved {path.name} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
