"""Plotly figures and tables for the pages (pure functions of plain data, so they are testable)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

ACCENT, MUTED, ALERT = "#c47f00", "#9aa5b1", "#c0392b"


def probability_chart(probs: Sequence[float], *, expected: int | None = None, height: int = 220) -> go.Figure:
    """Bars of p(count); the expected count's bar is marked, the most likely one coloured."""
    probs = list(probs)
    best = int(np.argmax(probs)) if probs else -1
    colours = [ACCENT if i == best else MUTED for i in range(len(probs))]
    fig = go.Figure(go.Bar(x=list(range(len(probs))), y=probs, marker_color=colours,
                           text=[f"{p:.0%}" for p in probs], textposition="outside", hovertemplate="%{x} items: %{y:.1%}"))
    if expected is not None and 0 <= expected < len(probs):
        fig.add_vline(x=expected, line_dash="dash", line_color=ALERT, annotation_text="expected",
                      annotation_position="top")
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(range=[0, 1.15], tickformat=".0%"),
                      xaxis=dict(title="items in the bin", dtick=1), showlegend=False)
    return fig


def confusion_figure(matrix: Sequence[Sequence[int]], *, normalise: bool, title: str = "") -> go.Figure:
    """Heatmap of true count (rows) against predicted count (columns): counts, or shares of each row."""
    cm = np.asarray(matrix, dtype=float)
    values = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalise else cm
    text = [[f"{v:.0%}" if normalise else f"{int(v)}" for v in row] for row in values]
    labels = [str(i) for i in range(cm.shape[0])]
    fig = go.Figure(go.Heatmap(z=values, x=labels, y=labels, text=text, texttemplate="%{text}", colorscale="YlOrBr",
                               zmin=0, zmax=1 if normalise else None, showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{text}<extra></extra>"))
    fig.update_layout(title=title, height=380, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
                      xaxis=dict(title="predicted count", side="bottom"),
                      yaxis=dict(title="true count", autorange="reversed"))
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
    """The abid_challenge table: per count, images, accuracy and RMSE (and the reference accuracy)."""
    frame = pd.DataFrame(list(per_class)).rename(columns={"count": "count", "n": "images"})
    frame = frame[["count", "images", "accuracy", "rmse"]]
    if reference_accuracy is not None:
        frame["ABID reference accuracy"] = list(reference_accuracy)[: len(frame)] + [None] * max(
            0, len(frame) - len(reference_accuracy))
    return frame
