"""The Batch audit page on a tiny run: runs and summary, ranked triage with filters and CSV, open on Inspect."""

from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app import batch_runs
from deq_core.batch import BatchOptions, RecordOptions, run_batch, triage
from deq_core.data import generate_folder
from lens_setup import APP, app_environment, apply_environment, restore_environment, tiny_models

TIMEOUT = 300


@pytest.fixture(scope="module")
def batch_env(tmp_path_factory):
    work = tmp_path_factory.mktemp("batch-app")
    models = tiny_models()
    previous = apply_environment({**app_environment(models, work), "DEQ_LENS_BATCH_RUNS": str(work / "runs"),
                                  "DEQ_LENS_AUDIT_DB": f"sqlite:///{work / 'audit.sqlite'}"})  # fmt: skip
    cases = generate_folder("inspection", 4, work / "cases")
    decisions = work / "decisions.csv"
    decisions.write_text("case_id,decision\ninsp-test-0000,crack\ninsp-test-0001,scratch\n")
    run_batch(BatchOptions(model=models / "inspection-deq", cases=cases, out=work / "runs" / "may", decisions=decisions,
                           chunk=2, records=RecordOptions(n_steps=4, stability_starts=2), progress=False))  # fmt: skip
    yield work / "runs" / "may"
    restore_environment(previous)


def test_pure_tables(batch_env):
    infos = batch_runs.list_run_infos(batch_env.parent)
    table = batch_runs.runs_table(infos)
    assert list(table["run"]) == ["may"] and table["cases"].iloc[0] == 4 and table["finished"].iloc[0]
    records = pd.read_parquet(batch_env / "records.parquet")
    ranked = triage(records)
    disagreeing = batch_runs.filter_triage(ranked, ["disagreement"], [], 0.0)
    assert set(disagreeing["case_id"]) == set(records.loc[records["disagrees"].fillna(False).astype(bool), "case_id"])
    assert batch_runs.filter_triage(ranked, [], [], 1e9).empty
    assert list(batch_runs.triage_view(ranked).columns)[:3] == ["case_id", "score", "reasons"]


def test_the_page_lists_the_run_ranks_its_cases_and_opens_one_on_inspect(batch_env):
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("pages/batch_audit.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="batch_run").value == "may"
    triage_frame = next(d for d in at.dataframe if "batch_triage" in d.proto.id).value
    assert len(triage_frame) == 4 and list(triage_frame["score"]) == sorted(triage_frame["score"], reverse=True)
    assert list(triage_frame.columns)[:3] == ["case", "score", "why"]  # readable names, not the record's
    download = next(d for d in at.get("download_button") if "batch_download" in d.proto.id)
    assert download is not None
    at.multiselect(key="batch_signals").set_value(["disagreement"]).run()
    filtered = next(d for d in at.dataframe if "batch_triage" in d.proto.id).value
    assert 0 < len(filtered) <= 2 and filtered["why"].str.contains("disagreement").all()
    case_id = filtered["case"].iloc[0]
    at.selectbox(key="batch_case_pick").set_value(case_id).run()
    at.button(key="batch_open").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["batch_case"]["case_id"] == case_id
    assert at.radio(key="insp_source").value == "A batch case"
    assert any(case_id in c.value for c in at.caption)
