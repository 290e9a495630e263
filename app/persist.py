"""Widget values that survive a change of page.

Streamlit forgets a widget's ``session_state`` key when a page without that widget
runs, so the cost calculator's inputs used to reset on every visit. ``keep`` stores
the value under a key no widget owns (``"kept:" + key``) and copies it back into the
widget's key before the widget is drawn again; the Overview and the Pilot page share
the same prices this way.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

PREFIX = "kept:"


def restore(key: str, default: Any) -> None:
    """Before drawing the widget ``key``: give it the kept value (or ``default`` the first time)."""
    kept = PREFIX + key
    if kept not in st.session_state:
        st.session_state[kept] = default
    if key not in st.session_state:
        st.session_state[key] = st.session_state[kept]


def remember(key: str) -> None:
    """After drawing the widget ``key``: keep its value beyond the widget's life."""
    if key in st.session_state:
        st.session_state[PREFIX + key] = st.session_state[key]


def kept(key: str, default: Any) -> Any:
    """The kept value of ``key`` (for a page that shows the figure without its widget)."""
    return st.session_state.get(PREFIX + key, default)
