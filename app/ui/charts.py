"""Plotly figures and tables for the pages (pure functions of plain data, so they are testable)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

ACCENT, MUTED, ALERT = "#c47f00", "#9aa5b1", "#c0392b"


def probability_chart(probs: Sequence[float], *, expected: int | None = None, labels: Sequence[str] | None = None,
                      height: int = 220) -> go.Figure:
    """Bars of p(class) labelled by count ("6+" for an open class); the expected count's bar is marked (a record
    above an open model's top exact count marks the open class), the most likely one coloured."""
    probs = list(probs)
    labels = list(labels) if labels is not None else [str(i) for i in range(len(probs))]
    best = int(np.argmax(probs)) if probs else -1
    colours = [ACCENT if i == best else MUTED for i in range(len(probs))]
    fig = go.Figure(go.Bar(x=labels, y=probs, marker_color=colours, text=[f"{p:.0%}" for p in probs],
                           textposition="outside", hovertemplate="%{x} items: %{y:.1%}<extra></extra>"))
    marked = expected_bar(expected, labels)
    if marked is not None:
        fig.add_vline(x=marked, line_dash="dash", line_color=ALERT, annotation_text="expected",
                      annotation_position="top")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(range=[0, 1.15], tickformat=".0%"),
                      xaxis=dict(title="items in the bin", type="category", tickmode="array", tickvals=labels,
                                 ticktext=labels), showlegend=False)
    return fig


def expected_bar(expected: int | None, labels: Sequence[str]) -> int | None:
    """The bar a record falls in: its count, or the open class ("6+") for a count above it; None when the model
    has no bar for it (nothing known, or beyond a closed model's range)."""
    if expected is None or expected < 0:
        return None
    if expected < len(labels) and labels[expected] == str(expected):
        return expected
    return len(labels) - 1 if labels and labels[-1].endswith("+") else None


def confusion_figure(matrix: Sequence[Sequence[int]], *, normalise: bool, labels: Sequence[str] | None = None,
                     title: str = "") -> go.Figure:
    """Heatmap of true count (rows) against predicted count (columns): counts, or shares of each row. The labels
    name the rows and columns ("6+" for an open class)."""
    cm = np.asarray(matrix, dtype=float)
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalise else cm
    text = [[f"{v:.0%}" if normalise else f"{int(v)}" for v in row] for row in values]
    labels = list(labels) if labels is not None and len(labels) == cm.shape[0] else [str(i) for i in range(cm.shape[0])]
    fig = go.Figure(go.Heatmap(z=values, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="YlOrBr",
                               zmin=0, zmax=1 if normalise else None, showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    # every count is a tick, however narrow the chart (two versions side by side): plotly would otherwise skip some
    ticks = dict(type="category", tickmode="array", tickvals=labels, ticktext=labels)
    fig.update_layout(title=title, height=380, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis=dict(title="predicted count", side="bottom", **ticks),
                      yaxis=dict(title="true count", autorange="reversed", **ticks))
    return fig


def curves_figure(history: Sequence[dict], metrics: Sequence[str], *, title: str = "",
                  reference: dict[str, float] | None = None) -> go.Figure:
    """Per-epoch lines of the named metrics; optional horizontal reference lines (e.g. the ABID baseline)."""
    frame = pd.DataFrame(list(history))
    fig = go.Figure()
    for name in metrics:
        if name in frame:
            fig.add_trace(go.Scatter(x=frame["epoch"], y=frame[name], mode="lines+markers", name=name))
    for name, value in (reference or {}).items():
        fig.add_hline(y=value, line_dash="dot", line_color=MUTED, annotation_text=name)
    fig.update_layout(title=title, height=300, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis=dict(title="epoch", dtick=1), legend=dict(orientation="h"))
    return fig


def per_class_frame(per_class: Sequence[dict], reference_accuracy: Sequence[float] | None = None) -> pd.DataFrame:
    """The abid_challenge table: per count (its label: "6+" for an open class), images, accuracy and RMSE (and the
    reference accuracy)."""
    frame = pd.DataFrame(list(per_class))
    frame["count"] = frame["label"] if "label" in frame else frame["count"].astype(str)
    frame = frame.rename(columns={"n": "images"})[["count", "images", "accuracy", "rmse"]]
    if reference_accuracy is not None:
        frame["ABID reference accuracy"] = list(reference_accuracy)[: len(frame)] + [None] * max(
            0, len(frame) - len(reference_accuracy))
    return frame
