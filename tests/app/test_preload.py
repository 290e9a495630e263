"""app/preload.py: the first page asks for the chart code before its first chart (timed by the browser tour)."""

from __future__ import annotations

from app import preload


def test_the_installed_streamlit_has_the_chunks_the_first_page_preloads():
    # A Streamlit upgrade that renames its chunks would silently turn the preload off: this says so.
    names = preload.chunk_names()
    assert [name.split(".")[0] for name in names] == list(preload.FIRST_PAGE_CHUNKS)
    assert all((preload.static_js_dir() / name).is_file() for name in names)


def test_chunk_names_skips_missing_stems_and_picks_one_file_each(tmp_path):
    for name in ("PlotlyChart.b.js", "PlotlyChart.a.js", "PlotlyChart.css", "Other.x.js"):
        (tmp_path / name).write_text("")
    assert preload.chunk_names(("PlotlyChart", "DataFrame"), folder=tmp_path) == ["PlotlyChart.a.js"]


def test_the_script_imports_each_chunk_beside_the_pages_entry_module():
    script = preload.preload_script(["PlotlyChart.a.js", "DataFrame.b.js"])
    assert script.startswith("<script>") and script.endswith("</script>")
    assert '["PlotlyChart.a.js", "DataFrame.b.js"]' in script
    assert "import(entry.replace(" in script and "/static\\/js\\/index" in script
    assert preload.preload_script([]) == ""  # nothing found: nothing sent
