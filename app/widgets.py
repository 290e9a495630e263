"""Small Streamlit building blocks the pages share (layout only)."""

from __future__ import annotations

import pandas as pd
import streamlit as st


def table_with_download(frame: pd.DataFrame, key: str, file_name: str, column_config: dict | None = None,
                        height: int | str = "auto") -> None:
    """A table and, under it, a button that downloads exactly that table as CSV."""
    st.dataframe(frame, hide_index=True, column_config=column_config, key=f"{key}_table", height=height)
    st.download_button(
        "Download CSV", frame.to_csv(index=False).encode(), file_name=file_name, mime="text/csv",
        key=f"{key}_csv", icon=":material/download:", on_click="ignore",
    )  # fmt: skip


def chart(figure, key: str) -> None:
    st.plotly_chart(figure, key=key, config={"displaylogo": False})

