"""DEQ Fusion Lens: `streamlit run app/main.py` from the repository root.

The entry point is the frame around every page: it picks the model in the
sidebar, says where it runs, and routes to the six pages.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `streamlit run app/main.py` puts app/ on the path, not the repository root.
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import streamlit as st  # noqa: E402
from app import preload  # noqa: E402


def page_icon():
    """The tab's icon, drawn here: a ``:material/...:`` page icon is fetched from fonts.gstatic.com,
    which an offline machine cannot reach (and should not be asked to). Served by this server."""
    from PIL import Image, ImageDraw

    icon = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    draw = ImageDraw.Draw(icon)
    draw.rounded_rectangle((2, 2, 61, 61), radius=14, fill="#1f6f8b")
    for box in ((10, 20, 34, 44), (30, 20, 54, 44)):  # two rings: the fixed point's loop
        draw.ellipse(box, outline="white", width=5)
    return icon


st.set_page_config(page_title="DEQ Fusion Lens", page_icon=page_icon(), layout="wide")


# A wider sidebar: at Streamlit's 300 px "handwritten-weight_tied" was cut to "handwritten-weight_tiec"
# in the model box (the browser tour measures the longest name against the box).
SIDEBAR_CSS = '<style>section[data-testid="stSidebar"]{width:344px !important;min-width:344px !important}</style>'
# Sent before torch is imported: the browser starts on the chart code while the server works (app/preload.py).
st.html(SIDEBAR_CSS + preload.preload_script(preload.chunk_names()), unsafe_allow_javascript=True)

import torch  # noqa: E402

from app import resources  # noqa: E402
from deq_core import ModelLoadError  # noqa: E402


if os.environ.get("DEQ_LENS_THREADS"):
    torch.set_num_threads(int(os.environ["DEQ_LENS_THREADS"]))

OTHER = "Another folder…"
# Any folder on the server's disk may be loaded only when the operator says so: the app
# may be served to others (docs/security.md), and a path box should not read the whole disk.
ALLOW_ANY_FOLDER = "DEQ_LENS_ALLOW_ANY_FOLDER"


def folder_refusal(path: str, root: Path) -> str | None:
    """Why the typed ``path`` may not be loaded, or None: inside the models root, or any folder when allowed."""
    if os.environ.get(ALLOW_ANY_FOLDER, "").strip() == "1":
        return None
    folder, root = Path(path).expanduser().resolve(), root.expanduser().resolve()
    if folder == root or root in folder.parents:
        return None
    return (f"Only model folders under {root} can be opened here. To open folders anywhere on this server, "
            f"start the app with {ALLOW_ANY_FOLDER}=1 (docs/security.md), or set DEQ_LENS_MODELS.")

PAGES = [
    st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page("pages/inspect_decision.py", title="Inspect a decision", url_path="inspect", icon=":material/search:"),
    st.Page("pages/lab.py", title="Modality lab", icon=":material/science:"),
    st.Page("pages/tuning.py", title="Convergence tuning", icon=":material/tune:"),
    st.Page("pages/robustness.py", title="Robustness", icon=":material/shield:"),
    st.Page("pages/pilot.py", title="Pilot read-out", url_path="pilot", icon=":material/payments:"),
    st.Page("pages/audit_log.py", title="Audit log", url_path="audit", icon=":material/history:"),
    st.Page("pages/batch_audit.py", title="Batch audit", url_path="batch", icon=":material/fact_check:"),
]


def choose_model() -> resources.ModelEntry | None:
    """Sidebar: model under the models root (inspection DEQ by default) or a folder by path.

    A typed path outside the models root is refused unless DEQ_LENS_ALLOW_ANY_FOLDER=1.
    """
    root = resources.models_root()
    entries = resources.list_models(root)
    broken = {b.name: b for b in resources.broken_models(root)}  # listed, marked, never the default
    names = [e.name for e in entries]
    default = resources.default_model(entries)
    options = [*names, *broken, OTHER]
    if st.session_state.get("model_choice") not in options:
        st.session_state["model_choice"] = default.name if default else OTHER
    choice = st.sidebar.selectbox(
        "Model", options, key="model_choice", format_func=lambda o: f"⚠ {o} (broken)" if o in broken else o,
        help=f"Model folders found under {root} (set DEQ_LENS_MODELS to look elsewhere). "
        "A folder marked broken fails its checks: choose it to see why.",
    )  # fmt: skip
    if choice in broken:
        st.sidebar.error(f"{choice} cannot be used: {broken[choice].message}")
        return None
    if choice == OTHER:
        anywhere = os.environ.get(ALLOW_ANY_FOLDER, "").strip() == "1"
        path = st.sidebar.text_input(
            "Model folder", key="model_path", placeholder=str(root / "inspection-deq"),
            help="A folder written by `python -m deq_core.train`"
            + ("." if anywhere else f", under {root} (set {ALLOW_ANY_FOLDER}=1 to allow any folder)."),
        )  # fmt: skip
        if not path:
            if not entries:
                st.sidebar.warning(f"No model folders under {root}.")
            return None
        refusal = folder_refusal(path, root)
        if refusal:  # checked before the folder is looked at: the answer says nothing of what exists there
            st.sidebar.error(refusal)
            return None
        try:
            return resources.model_entry(path)
        except (ModelLoadError, OSError, ValueError) as error:
            st.sidebar.error(str(error))
            return None
    return entries[names.index(choice)]


def choose_dataset() -> None:
    """Sidebar: open a dataset folder (dataset.json + manifest.csv) with its models, or the shipped data.

    The folder's models are ``models/`` inside it or a ``models`` folder beside it; every
    page then browses the folder's test split and the Overview compares its models.
    A folder outside the models root is refused unless DEQ_LENS_ALLOW_ANY_FOLDER=1.
    """
    path = st.sidebar.text_input("Dataset folder (optional)", key="dataset_path", placeholder="the shipped data",
                                 help="A folder in the format of deq_core/data/folder.py, with its model folders in "
                                 "models/ inside it or beside it. Empty: the models and data the app started with.")  # fmt: skip
    if not path:
        st.session_state.pop(resources.DATASET_FOLDER, None)
        return
    refusal = folder_refusal(path, resources.environment_models_root())
    try:
        folder = resources.check_dataset_folder(path) if refusal is None else None
    except ValueError as error:
        refusal = str(error)
    if refusal:
        st.session_state.pop(resources.DATASET_FOLDER, None)
        st.sidebar.error(refusal)
        return
    if st.session_state.get(resources.DATASET_FOLDER) != str(folder):
        st.session_state[resources.DATASET_FOLDER] = str(folder)
        st.session_state.pop("case_id", None)  # the shipped split's case is not in this one
    st.sidebar.caption(f"Cases from **{folder.name}**, models from `{resources.models_root()}`")


RUN_CODE_HELP = (
    "This model is your own code: adapter.json names the Python factory that builds it. Opening it imports and runs "
    "that code inside this server's process, with the server's rights: it can read and write the files the server "
    "can, reach the network, and see what other visitors of this server open. Ticking allows this one folder's code, "
    "as it is now (its checksum), for your session only; another folder, or this one after a change to its code, "
    "asks again. Tick only for code you trust."
)

with st.sidebar:
    st.markdown("### DEQ Fusion Lens")
choose_dataset()
entry = choose_model()
if entry is not None:
    st.session_state["model_folder"] = entry.folder
    with st.sidebar:
        st.caption(
            f"**{entry.name}** · {entry.architecture.replace('_', '-')} fusion · data: {Path(entry.dataset).name}  \n"
            f"Runs on **{resources.device_name()}**  \n"
            f"Checksum `{entry.short_checksum}`",
            help=f"SHA-256 over the weights and config: {entry.checksum}. Reports cite it, so a result can be "
            "traced to the exact model.",
        )
    if resources.is_user_model(entry):
        key = f"trust_{entry.folder}"
        changed = resources.stale_trust(entry.folder)  # allowed before, but its code changed since: ask again
        if changed:
            st.session_state[key] = False
        with st.sidebar:
            trusted = st.checkbox("Run model code", key=key, help=RUN_CODE_HELP)
        resources.set_trust(entry.folder, trusted)
        if not trusted:
            st.title("DEQ Fusion Lens")
            if changed:
                st.warning(f"The code of {entry.name} changed since you allowed it to run: check it, then tick "
                           "**Run model code** again if you trust the new code.")  # fmt: skip
            st.warning(f"{entry.name} is your own model: opening it runs its code ({entry.folder}/adapter.json). "
                       "Tick **Run model code** in the sidebar if you trust it.")  # fmt: skip
            st.caption(RUN_CODE_HELP)
            st.stop()
    try:
        resources.lens(entry)
    except (ModelLoadError, OSError, ValueError) as error:
        st.error(f"The model in {entry.folder} cannot be used: {error}")
        st.stop()
else:
    st.session_state.pop("model_folder", None)

page = st.navigation(PAGES)
if entry is None:
    st.title("DEQ Fusion Lens")
    st.warning(
        f"No model to show. Train one, e.g. `python -m deq_core.train --dataset inspection --model deq "
        f"--out {resources.models_root() / 'inspection-deq'}`, or give a model folder in the sidebar."
    )
    st.stop()
with resources.foreground_run():  # background speculation steps aside meanwhile
    page.run()
# After the page, so the first paint never waits for it: queue the dataset-level work
# a visitor of the other pages will want (jobs already queued or done are not repeated).
resources.warm_up(entry)
