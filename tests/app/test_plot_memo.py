"""app.plots memoises its figure builders: a rerun gets the same figure back; a changed argument never does."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from app import plots
from app.plots import FigureMemo, fingerprint


def test_the_same_arguments_give_the_same_figure_and_changed_values_a_new_one():
    traces = np.random.default_rng(0).normal(size=(3, 40)).astype(np.float32)
    names = ["temperature", "vibration", "current"]
    first = plots.sensor_traces(traces, names, height=260)
    assert plots.sensor_traces(traces.copy(), list(names), height=260) is first  # equal values, new objects
    changed = traces.copy()
    changed[1, 7] += 1e-3
    other = plots.sensor_traces(changed, names, height=260)
    assert other is not first
    assert other.to_dict() == plots.sensor_traces.unmemoised(changed, names, height=260).to_dict()
    assert plots.sensor_traces(traces, names, height=300) is not first  # a keyword is part of the key


def test_fingerprints_follow_contents_of_arrays_tensors_and_frames():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert fingerprint(a) == fingerprint(a.copy()) != fingerprint(a.T.copy()) != fingerprint(a.astype(np.float64))
    assert fingerprint(torch.arange(3.0)) == fingerprint(np.arange(3, dtype=np.float32))
    frame = pd.DataFrame({"x": [1.0, 2.0], "y": ["a", "b"]})
    edited = frame.copy()
    edited.loc[1, "y"] = "c"
    assert fingerprint(frame) == fingerprint(frame.copy()) != fingerprint(edited)
    assert fingerprint((1, 1.0, True)) != fingerprint((1.0, 1, 1))  # 1, 1.0 and True hash alike in Python; not here


def test_what_cannot_be_fingerprinted_is_built_every_time_and_the_memo_is_bounded():
    memo, calls = FigureMemo(max_entries=2), []

    def build(value):
        calls.append(value)
        return object()

    built = memo.wrap(build)
    thing = object()  # no fingerprint: called through, never kept
    built(thing), built(thing)
    assert len(calls) == 2 and len(memo) == 0
    one = built(1)
    built(2), built(3)  # 1 is the least recently used: dropped
    assert len(memo) == 2 and built(1) is not one and calls[-1] == 1


def test_unhashable_frames_fall_back_to_building(monkeypatch):
    with pytest.raises(TypeError):
        fingerprint(pd.DataFrame({"cells": [[1, 2], [3]]}))
    memo = FigureMemo()
    built = memo.wrap(lambda frame: len(frame))
    assert built(pd.DataFrame({"cells": [[1, 2], [3]]})) == 2 and len(memo) == 0
