"""Small Streamlit building blocks the pages share (layout only)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

# The app's own limit on one uploaded file. `server.maxUploadSize` (.streamlit/config.toml)
# is set higher, so a file between the two reaches the page and is refused there in
# words; over that one the browser refuses it and only the file chip can say so.
UPLOAD_LIMIT_MB = 10


def upload_size_problem(name: str, size: int, limit_mb: int = UPLOAD_LIMIT_MB) -> str | None:
    """The sentence refusing a ``size``-byte upload over ``limit_mb`` megabytes, or None when it fits."""
    if size <= limit_mb * 2**20:
        return None
    return (f"{name} is {size / 2**20:.1f} MB, over the {limit_mb} MB limit for one upload; "
            "a case is a small picture, a sensor CSV and a note.")  # fmt: skip


def table_with_download(frame: pd.DataFrame, key: str, file_name: str, column_config: dict | None = None,
                        height: int | str = "auto") -> None:
    """A table and, under it, a button that downloads exactly that table as CSV."""
    st.dataframe(frame, hide_index=True, column_config=column_config, key=f"{key}_table", height=height)
    st.download_button(
        "Download CSV", frame.to_csv(index=False).encode(), file_name=file_name, mime="text/csv",
        key=f"{key}_csv", icon=":material/download:", on_click="ignore",
    )  # fmt: skip


def show_table(table, key: str, file_name: str, height: int | str = "auto") -> None:
    """An ``app.frames.Display`` (readable headers, rounded values) and its CSV download.

    Each number column gets its printf format and help, so every page shows shares the same way ("96.0%").
    """
    # On screen the cells say "96.0%", so the header drops the CSV's "(%)"; number columns are narrow so
    # a table of nine columns fits beside the sidebar at 1280 px.
    config = {
        title: st.column_config.NumberColumn(title.removesuffix(" (%)"), format=table.formats[title],
                                             help=table.helps.get(title), width="small")
        for title in table.formats
    }
    for title, text in table.helps.items():
        config.setdefault(title, st.column_config.Column(title, help=text))
    table_with_download(table.frame, key, file_name, column_config=config, height=height)


def chart(figure, key: str) -> None:
    st.plotly_chart(figure, key=key, config={"displaylogo": False})

