"""Every file of tests/data/bad_inputs, uploaded on the Inspect page: a plain message, and the app keeps running."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from lens_setup import APP, REPO, app_environment, apply_environment, restore_environment, tiny_models

CORPUS = REPO / "tests" / "data" / "bad_inputs"
UPLOADS = {  # file -> (uploader key, mime type, message fragment)
    "corrupt.png": ("upload_photo", "image/png", "not a readable PNG or JPEG image"),
    "truncated.png": ("upload_photo", "image/png", "not a readable PNG or JPEG image"),
    "gif_renamed.png": ("upload_photo", "image/png", "not a readable PNG or JPEG image"),
    "bomb.png": ("upload_photo", "image/png", "too large"),
    "bomb_moderate.png": ("upload_photo", "image/png", "over the limit"),
    "sensors_nan.csv": ("upload_sensors", "text/csv", "missing or NaN"),
    "sensors_inf.csv": ("upload_sensors", "text/csv", "infinite"),
    "sensors_text.csv": ("upload_sensors", "text/csv", "not a number"),
    "sensors_wrong_shape.csv": ("upload_sensors", "text/csv", "expected 128"),
    "sensors_binary.csv": ("upload_sensors", "text/csv", "not UTF-8"),
    "sensors_semicolon.csv": ("upload_sensors", "text/csv", "looks ';'-separated"),
}
NOTED = {  # file -> (uploader key, mime type, fragment of the st.info the page shows)
    "jpeg_renamed.png": ("upload_photo", "image/png", "is a JPEG image although its name ends in .png"),
    "rgb.png": ("upload_photo", "image/png", "RGB colour image converted to grayscale"),
}


@pytest.fixture(scope="module")
def upload_page(tmp_path_factory):
    previous = apply_environment(app_environment(tiny_models(), tmp_path_factory.mktemp("lens-uploads")))
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page("pages/inspect_decision.py").run()
    at.radio(key="insp_source").set_value("Upload a case").run()
    assert not at.exception
    yield at
    restore_environment(previous)


@pytest.mark.parametrize("name", sorted(UPLOADS))
def test_a_bad_upload_gives_a_message_and_the_app_keeps_running(upload_page, name):
    at = upload_page
    key, mime, fragment = UPLOADS[name]
    at.file_uploader(key=key).set_value((name, (CORPUS / name).read_bytes(), mime)).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any(name in e and fragment in e for e in errors), errors
    at.file_uploader(key=key).set_value(None).run()  # clearing it leaves the page as it was
    assert not at.exception
    assert not at.error
    assert any("Give every input" in i.value for i in at.info)  # names what is missing


def test_an_empty_note_is_refused_and_the_page_still_answers(upload_page):
    at = upload_page
    at.text_area(key="upload_note").input("  \n\t ").run()
    assert not at.exception
    at.text_area(key="upload_note").input("").run()
    assert not at.exception


def test_a_missing_input_is_named_and_can_be_treated_as_dropped(upload_page):
    at = upload_page
    note = "Deep scratch across the sealing face."
    at.text_area(key="upload_note").input(note).run()
    assert not at.exception
    missing = [i.value for i in at.info if i.value.startswith("Missing:")]
    assert missing and "photo" in missing[0] and "sensors" in missing[0] and "note" not in missing[0]
    at.checkbox(key="upload_drop_missing").check().run()
    assert not at.exception, [e.value for e in at.exception]
    warnings = [w.value for w in at.warning]
    assert any("Treated as dropped" in w and "photo" in w and "sensors" in w for w in warnings), warnings
    at.checkbox(key="upload_drop_missing").uncheck().run()
    at.text_area(key="upload_note").input("").run()
    assert not at.exception


@pytest.mark.parametrize("name", sorted(NOTED))
def test_a_converted_upload_is_accepted_and_the_page_says_what_was_converted(upload_page, name):
    at = upload_page
    key, mime, fragment = NOTED[name]
    at.file_uploader(key=key).set_value((name, (CORPUS / name).read_bytes(), mime)).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    notes = [i.value for i in at.info if fragment in i.value]
    assert notes and notes[0].startswith(f"photo ({name}): "), [i.value for i in at.info]
    at.file_uploader(key=key).set_value(None).run()
    assert not any(fragment in i.value for i in at.info)


def test_an_upload_over_the_size_limit_is_refused_on_the_page(upload_page):
    at = upload_page
    from app.widgets import UPLOAD_LIMIT_MB

    big = bytes(UPLOAD_LIMIT_MB * 2**20 + 1)
    at.file_uploader(key="upload_sensors").set_value(("big.csv", big, "text/csv")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("sensors (big.csv)" in e and f"over the {UPLOAD_LIMIT_MB} MB limit" in e for e in errors), errors
    at.file_uploader(key="upload_sensors").set_value(None).run()
    assert not at.error


# --------------------------------------------------------------------------- the audit log: tampered reports, wildcards

@pytest.fixture()
def audit_page(tmp_path):
    from deq_core import AuditLog, record_sha256

    url = f"sqlite:///{tmp_path / 'audit.sqlite'}"
    log = AuditLog(url)
    for case_id in ("insp_1", "inspx1", "100%", "1000"):
        record = {"case_id": case_id, "prediction": {"class": "ok"}}
        record["report_sha256"] = record_sha256(record)
        folder = tmp_path / case_id.replace("%", "pct")
        folder.mkdir()
        (folder / "report.json").write_text(json.dumps(record), encoding="utf-8")
        log.append(model_name="inspection-deq", model_checksum="0" * 64, case_id=case_id, prediction="ok",
                   report_sha256=record["report_sha256"], report_path=str(folder / "report.json"),
                   summary={"plain": f"summary of {case_id}"}, source="cli")  # fmt: skip
    previous = apply_environment({**app_environment(tiny_models(), tmp_path), "DEQ_LENS_AUDIT_DB": url})
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at.switch_page("pages/audit_log.py").run()
    assert not at.exception, [e.value for e in at.exception]
    yield at, tmp_path
    restore_environment(previous)


def test_the_audit_filter_takes_percent_and_underscore_literally(audit_page):
    at, _ = audit_page
    for typed, expected in (("_", ["insp_1"]), ("%", ["100%"]), ("insp", ["inspx1", "insp_1"])):
        at.text_input(key="audit_case").input(typed).run()
        assert not at.exception
        assert list(at.dataframe[0].value["case"]) == expected, typed


def test_a_report_file_changed_after_it_was_logged_is_not_shown(audit_page):
    at, root = audit_page
    path = root / "1000" / "report.json"
    record = json.loads(path.read_text())
    record["prediction"]["class"] = "crack"  # edited after recording; its own hash field left as it was
    path.write_text(json.dumps(record), encoding="utf-8")
    at.text_input(key="audit_case").input("1000").run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("does not match the log" in e and str(path) in e for e in errors), errors
    assert not at.toggle and not at.download_button  # nothing of the changed file is offered
    path.write_text("{not json", encoding="utf-8")
    at.run()
    assert any("cannot be read" in e.value for e in at.error)
    path.unlink()
    at.run()
    assert not at.error and any("no longer on disk" in c.value for c in at.caption)


# --------------------------------------------------------------------------- "Another folder…": only under the models root

@pytest.fixture()
def outside_model(tmp_path):
    """A copy of a tiny model outside the models root, and the app started without the allowance."""
    import shutil

    outside = tmp_path / "elsewhere" / "inspection-early"
    shutil.copytree(tiny_models() / "inspection-early", outside)
    previous = apply_environment({**app_environment(tiny_models(), tmp_path), "DEQ_LENS_ALLOW_ANY_FOLDER": ""})
    yield outside
    restore_environment(previous)


def _open_folder(path) -> AppTest:
    # AppTest reruns only the page script of an st.navigation app, so the sidebar is driven on a first run.
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.session_state["model_choice"] = "Another folder…"
    at.session_state["model_path"] = str(path)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_a_folder_outside_the_models_root_is_refused_and_the_sidebar_says_how_to_allow_it(outside_model):
    at = _open_folder(outside_model)
    errors = [e.value for e in at.sidebar.error]
    assert any("Only model folders under" in e and "DEQ_LENS_ALLOW_ANY_FOLDER=1" in e for e in errors), errors
    assert "model_folder" not in at.session_state
    at = _open_folder("/etc")  # nothing about what is there: the same refusal, not "no config.json"
    assert any("Only model folders under" in e.value for e in at.sidebar.error)
    at = _open_folder(tiny_models() / "inspection-late")  # inside the root: opened
    assert not at.sidebar.error and at.session_state["model_folder"].endswith("inspection-late")


def test_with_the_operators_allowance_a_folder_anywhere_is_opened(outside_model):
    previous = apply_environment({"DEQ_LENS_ALLOW_ANY_FOLDER": "1"})
    try:
        at = _open_folder(outside_model)
        assert not at.sidebar.error, [e.value for e in at.sidebar.error]
        assert at.session_state["model_folder"] == str(outside_model.resolve())
    finally:
        restore_environment(previous)


def test_the_server_listens_on_this_machine_only_and_takes_uploads_a_little_over_the_apps_limit():
    import tomllib

    from app.widgets import UPLOAD_LIMIT_MB

    server = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "127.0.0.1"
    assert server["maxUploadSize"] > UPLOAD_LIMIT_MB  # so the page, not only the file chip, can refuse
