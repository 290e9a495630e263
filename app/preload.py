"""Start the browser on the chart code before the first chart arrives.

Streamlit's frontend fetches a component's code only when the first element of that kind
reaches the page. Plotly's is one 4.7 MB module; on a two-core machine Chromium needs
about 3 s to fetch, parse and run it, and the Overview's first chart used to arrive
only after the server had imported torch and loaded the models, so that 3 s came on
top. ``preload_script`` returns a small script, sent with the page's first elements,
that imports those modules at once, while the server is still busy: the module map
keys modules by URL, so Streamlit's own later import finds them loaded. The modules
come from this server (nothing is fetched from elsewhere). Pure: no Streamlit here.
"""

from __future__ import annotations

import json
from pathlib import Path

# The frontend modules of the first page's element kinds, by file-name stem (Streamlit names each chunk STEM.HASH.js).
FIRST_PAGE_CHUNKS = ("PlotlyChart", "DataFrame")


def static_js_dir() -> Path | None:
    """Where the installed Streamlit keeps its frontend's JavaScript chunks, or None if it is not found."""
    try:
        import streamlit
    except ImportError:
        return None
    folder = Path(streamlit.__file__).parent / "static" / "static" / "js"
    return folder if folder.is_dir() else None


def chunk_names(stems: tuple[str, ...] = FIRST_PAGE_CHUNKS, folder: Path | None = None) -> list[str]:
    """The chunk file names for ``stems`` (one each, the first in name order); stems without a chunk are left out."""
    folder = folder if folder is not None else static_js_dir()
    if folder is None:
        return []
    names = []
    for stem in stems:
        found = sorted(p.name for p in folder.glob(f"{stem}.*.js"))
        if found:
            names.append(found[0])
    return names


def preload_script(names: list[str]) -> str:
    """A ``<script>`` that imports the named chunks from the folder of the page's own entry module, or "" for none.

    The entry module (``static/js/index.HASH.js``) is found among the page's scripts, so a
    base path set for the server is followed. Errors are swallowed: a failed preload only
    means the chart code loads when the first chart arrives, as it would without this.
    """
    if not names:
        return ""
    return (
        "<script>(() => {"
        "const entry = [...document.scripts].map((s) => s.src).find((u) => /\\/static\\/js\\/index\\.[^/]+\\.js$/.test(u));"
        "if (!entry) return;"
        f"for (const name of {json.dumps(names)}) import(entry.replace(/[^/]+$/, name)).catch(() => {{}});"
        "})();</script>"
    )
