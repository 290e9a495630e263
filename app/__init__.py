"""DEQ Fusion Lens, the Streamlit app: `streamlit run app/main.py`.

Layers: ``frames`` and ``plots`` are pure (no
Streamlit, no torch import); ``jobs`` runs long deq_core work off the script
thread; ``resources`` holds the Streamlit caches; ``pages`` lay out widgets.
"""
