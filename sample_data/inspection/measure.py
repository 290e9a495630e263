"""Measure how much each modality of the inspection demo tells alone, and all three together.

    python sample_data/inspection/measure.py        # about 5 minutes on one CPU thread

Trains on the default train split (1,800 cases), scores on the default test split
(300 cases), and prints the markdown table of README.md:

* the Bayes limit of each modality: the accuracy of the best possible classifier,
  counted from the generator's ground-truth evidence (the faint crack sign in the
  sensors is counted as always visible, so the sensors' limit is an upper bound);
* logistic regression and gradient-boosted trees on simple features: line
  detectors for the photo, spectra and trends for the sensors, word and word-pair
  counts for the note, all of them concatenated for "all three";
* the project's own encoders (``deq_core.engine.model``, architecture "early", 20 epochs
  with the optimiser settings of ``deq_core.train``) on each modality and on all
  three, and a small CNN with global max pooling on the photo alone.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from deq_core.engine import ModelConfig  # noqa: E402
from deq_core.data import generate_inspection, inspection, inspection_cases  # noqa: E402
from deq_core.engine import EncoderSettings  # noqa: E402
from deq_core.engine import build_model  # noqa: E402

torch.set_num_threads(1)


def photo_features(photos: np.ndarray) -> np.ndarray:
    """Line detectors: residuals from a 5x5 local mean, ``(n, 64, 64)`` in [0, 1] ``-> (n, 12)``."""
    rows = []
    for image in photos.astype(np.float64):
        residual = image - uniform_filter(image, 5)
        bright, dark = np.clip(residual, 0, None), np.clip(-residual, 0, None)
        rows.append(
            [bright.max(), dark.max(), (bright > 0.08).sum(), (dark > 0.08).sum(), (bright > 0.04).sum(),
             (dark > 0.04).sum(), np.sort(bright.ravel())[-20:].mean(), np.sort(dark.ravel())[-20:].mean(),
             (bright > 0.06).sum() - (dark > 0.06).sum(), residual.std(), image.std(), image.mean()]
        )  # fmt: skip
    return np.asarray(rows)


def sensor_features(logs: np.ndarray) -> np.ndarray:
    """Spectra of vibration and current, and the temperature trend, ``(n, 3, 128) -> (n, 135)``."""
    vibration = np.abs(np.fft.rfft(logs[:, 0] - logs[:, 0].mean(axis=1, keepdims=True), axis=1))
    current = np.abs(np.fft.rfft(logs[:, 2] - logs[:, 2].mean(axis=1, keepdims=True), axis=1))
    temperature = logs[:, 1]
    trend = np.stack(
        [np.median(temperature[:, -16:], 1) - np.median(temperature[:, :16], 1),
         np.median(logs[:, 2, -16:], 1) - np.median(logs[:, 2, :16], 1),
         np.abs(np.diff(logs[:, 0], axis=1)).mean(1), logs[:, 0].std(1), np.sort(vibration[:, 1:], axis=1)[:, -3:].sum(1)],
        axis=1,
    )  # fmt: skip
    return np.concatenate([vibration, current, trend], axis=1)


def bayes_limit(symbols: list, labels: np.ndarray) -> float:
    """Accuracy of always guessing the most frequent class of each observed symbol."""
    table = Counter(zip(symbols, labels.tolist()))
    best: dict = {}
    for (symbol, _), count in table.items():
        best[symbol] = max(best.get(symbol, 0), count)
    return sum(best.values()) / len(labels)


def note_symbol(case) -> str:
    """What a note says, stripped of phrasing: the Bayes-relevant content of the text."""
    evidence = case.evidence
    if evidence.note == "vague" or (evidence.note == "wrong" and evidence.note_about == "ok"):
        return "vague"
    if evidence.note == "group":
        return "surface" if evidence.note_about in ("scratch", "crack") else "machine"
    return f"names {evidence.note_about}"


class PhotoNet(nn.Module):
    def __init__(self, out: int = len(inspection.CLASS_NAMES)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(32, out)

    def forward(self, x):  # (b, 1, 64, 64) -> (b, classes)
        return self.head(self.features((x - 0.5) / 0.2))


def train_torch(model, train_inputs, train_labels, test_inputs, test_labels, epochs: int) -> float:
    """Test accuracy after AdamW with a one-cycle schedule (the settings of ``deq_core.train``)."""
    torch.manual_seed(0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    steps = -(-len(train_labels) // 64)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=epochs * steps)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(train_labels)).split(64):
            logits = model(*(x[batch] for x in train_inputs))
            loss = nn.functional.cross_entropy(logits, train_labels[batch], label_smoothing=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        return (model(*test_inputs).argmax(1) == test_labels).float().mean().item()


def main() -> None:
    train, test = generate_inspection("train"), generate_inspection("test")
    y_train, y_test = train.labels.numpy(), test.labels.numpy()
    photo_train, photo_test = train.inputs[0][:, 0].numpy(), test.inputs[0][:, 0].numpy()  # (n, 64, 64) in [0, 1]
    sensors_train, sensors_test = train.inputs[1].numpy(), test.inputs[1].numpy()
    notes_train, notes_test = train.texts["note"], test.texts["note"]

    cases = inspection_cases("train") + inspection_cases("test")
    labels = np.array([c.label for c in cases])
    symbols = {
        "photo": [c.evidence.photo for c in cases],
        "sensors": [c.evidence.sensors for c in cases],
        "note": [note_symbol(c) for c in cases],
    }
    symbols["all three"] = list(zip(symbols["photo"], symbols["sensors"], symbols["note"]))

    def fit(model, x_train, x_test) -> float:
        return float(model.fit(x_train, y_train).score(x_test, y_test))

    logistic = lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5))  # noqa: E731
    boosting = lambda: HistGradientBoostingClassifier(max_iter=200, random_state=0)  # noqa: E731
    words = CountVectorizer(ngram_range=(1, 2), binary=True).fit(notes_train)
    bow_train, bow_test = words.transform(notes_train).toarray(), words.transform(notes_test).toarray()
    features = {
        "photo": (photo_features(photo_train), photo_features(photo_test)),
        "sensors": (sensor_features(sensors_train), sensor_features(sensors_test)),
        "note": (bow_train, bow_test),
    }
    features["all three"] = tuple(
        np.concatenate([features[m][i] for m in ("photo", "sensors", "note")], axis=1) for i in (0, 1)
    )

    rows = {}
    for name in ("photo", "sensors", "note", "all three"):
        # Word counts are not standardised: scaling rare words up only helps the model overfit them.
        linear = LogisticRegression(max_iter=3000) if name == "note" else logistic()
        rows[name] = {
            "Bayes limit": bayes_limit(symbols[name], labels),
            "logistic regression": fit(linear, *features[name]),
            "boosted trees": fit(boosting(), *features[name]),
        }
    # The product's own encoders (deq_core.engine.encoders), fused early, on each modality and on all three.
    for name, index in (("photo", [0]), ("sensors", [1]), ("note", [2]), ("all three", [0, 1, 2])):
        config = ModelConfig(
            "early",
            tuple(train.modalities[i] for i in index),
            train.class_names,
            encoder=EncoderSettings(dropout=0.3),
        )
        model = build_model(config)
        model.fit_statistics([train.inputs[i] for i in index])
        rows[name]["project encoders"] = train_torch(
            model,
            tuple(train.inputs[i] for i in index),
            train.labels,
            tuple(test.inputs[i] for i in index),
            test.labels,
            epochs=20,
        )
    photo_cnn = train_torch(PhotoNet(), (train.inputs[0],), train.labels, (test.inputs[0],), test.labels, epochs=15)

    columns = ["Bayes limit", "logistic regression", "boosted trees", "project encoders"]
    print(f"train {len(y_train)} cases, test {len(y_test)} cases; test accuracy\n")
    print("| modalities | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{100 * row[c]:.1f}%" if c in row else "" for c in columns]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nphoto alone, small CNN with global max pooling (a line detector): {100 * photo_cnn:.1f}%")


if __name__ == "__main__":
    main()
