"""The Overview's model card: the stability share on every visit, the card's three files on request.

The card's measurements (evaluation by class, a quick robustness sweep read from the
app's robustness cache, faithfulness on a few cases, the stable-unique share via
``Lens.stability``) run as a background job and are kept on disk by
``deq_core.build_card``, so a restarted app offers the card at once.
"""

from __future__ import annotations

import streamlit as st

from app import resources
from deq_core.cache import DiskCache, data_fingerprint
from deq_core.cache import key as cache_key
from deq_core import CardOptions, ModelCard, build_card, card_html, card_markdown, card_pdf, stability_share


def card_job(entry: resources.ModelEntry):
    key = ("model-card", entry.folder, entry.checksum, len(resources.test_data(entry)))
    open_lens = resources.background_opener(entry)  # the session's leave for its code, read here in the script

    def work(report) -> ModelCard:
        report(0.05, "measuring the model card (stability, faithfulness, robustness)")
        return build_card(open_lens(), CardOptions(), robustness_cache=resources.robustness_cache_dir(),
                          data=resources.test_data(entry))  # fmt: skip

    return resources.jobs().submit(key, "model card", work)


@st.cache_data(show_spinner=False, max_entries=8)
def _files(checksum: str, _card: ModelCard) -> tuple[bytes, bytes, bytes]:
    return card_markdown(_card).encode(), card_html(_card).encode(), card_pdf(_card)


def stability_job(entry: resources.ModelEntry):
    """The stable-unique share alone (cheap next to the whole card): the Overview shows it on every visit.

    Kept on disk by model checksum and data fingerprint: measuring it takes seconds of both
    cores, which at every start would compete with the browser drawing the first page.
    """
    data = resources.test_data(entry)
    key = ("stability-share", entry.folder, entry.checksum, len(data))
    open_lens = resources.background_opener(entry)
    cases = CardOptions().stability_cases

    def work(report):
        store = DiskCache("stability-share", root=resources.cache_dir())
        name = cache_key("stability-share", entry.checksum, data_fingerprint(data), cases)
        cached = store.get_json(name)
        if cached is not None:
            return cached
        report(0.05, f"assessing the fixed points of up to {cases} test cases")
        share = stability_share(open_lens(), cases, data=data)
        if share is not None:
            store.put_json(name, share)
        return share

    return resources.jobs().submit(key, "stability share", work)


def card_section(entry: resources.ModelEntry) -> None:
    """The stable-unique share (DEQ models), then the card's Markdown, HTML and PDF downloads on request."""
    columns = st.columns([1, 1, 1, 1])
    if entry.architecture == "deq":
        stability = resources.wait_for(stability_job(entry), "Assessing the equilibria of the test cases")
        if stability:
            columns[0].metric(
                "Unique, stable equilibrium", f"{stability['stable_unique_fraction']:.0%}",
                help=f"Share of {stability['cases']} test cases whose fixed point is locally stable and the only one "
                f"found from {stability['starts']} starts (Lens.stability). CLI: {stability['command']}",
            )  # fmt: skip
    else:
        columns[0].caption("A feed-forward model: no fixed point, so no stability share.")
    state_key = f"model_card_{entry.checksum}"
    if state_key not in st.session_state:
        if not columns[1].button("Prepare model card", key="card_prepare", icon=":material/description:",
                                 help="Measures robustness, faithfulness and stability for the card (cached on disk "
                                 "afterwards). CLI: deq-lens card --model FOLDER --out DIR"):  # fmt: skip
            return
        card = resources.wait_for(card_job(entry), "Measuring the model card")
        if card is None:
            return
        st.session_state[state_key] = (card, *_files(card.checksum, card))
    card, markdown, page, pdf = st.session_state[state_key]
    name = f"{entry.name}-model-card"
    columns[1].download_button("Model card (Markdown)", markdown, file_name=f"{name}.md", mime="text/markdown",
                               key="card_md", icon=":material/download:")  # fmt: skip
    columns[2].download_button("Model card (HTML)", page, file_name=f"{name}.html", mime="text/html",
                               key="card_html", icon=":material/download:")  # fmt: skip
    columns[3].download_button("Model card (PDF)", pdf, file_name=f"{name}.pdf", mime="application/pdf",
                               key="card_pdf", icon=":material/download:")  # fmt: skip
    if card.missing_owner_fields:
        st.caption(f"{len(card.missing_owner_fields)} owner fields are placeholders; fill them in "
                   f"`{entry.folder}/card.json` ({', '.join(card.missing_owner_fields)}). See docs/model-card.md.")  # fmt: skip
