"""DEQ Fusion Lens with a warm start: `streamlit run app/serve.py` (what `deq-lens app` runs).

The same app as `streamlit run app/main.py`, served as a Streamlit ``st.App``: as the
server starts, a thread imports torch, checks the models and loads the default one,
its baselines and their cached evaluations (``resources.warm_start``), while the first
browser is still loading the page. Without it, that work waits for the first visitor's
first run and the Overview's charts come seconds later.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from contextlib import asynccontextmanager
from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _warm() -> None:
    # Streamlit warns once per cache call made outside a script run; here that is the point.
    quiet = logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from app import resources

        resources.warm_start()
    except Exception:  # noqa: BLE001 - a failed warm start costs speed only: the page then says what is wrong
        print("DEQ Fusion Lens: the warm start failed; the first page will load everything itself.\n"
              + traceback.format_exc(), file=sys.stderr, flush=True)  # fmt: skip
    finally:
        quiet.setLevel(level)


@asynccontextmanager
async def lifespan(_app):
    threading.Thread(target=_warm, name="deq-lens-warm-start", daemon=True).start()
    yield


app = st.App("main.py", lifespan=lifespan)
