"""BinAudit's words for a bin's state, defined once: every page, every CSV legend and the README use these.

Two facts that are easy to confuse, and are kept apart on purpose:
- *queued* (in the review queue): the bin's mismatch probability, 1 - p(record), is at or above the threshold, or an
  analyst sent it by hand, and nobody decided it since its latest prediction. This is the only meaning of a flag.
- *predicted count differs*: the model's most likely count is not the record's. A separate fact: a bin the model is
  unsure about is queued although its most likely count equals the record (p(record) = 40%: mismatch probability
  60%), and a bin whose most likely count differs may stay out (p(record) = 45%, the rest spread over three counts).
Wherever a flag appears, the record, the prediction and the probability appear with it (`flag_text`), so a flag
never seems to contradict the numbers.

On screen: human labels (`COLUMNS[code].label`, `decision_label`). In CSV files: the stable codes as headers, and
`legend_frame` says what each means (shown beside every download, and in the README).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from modeling.counts import CountClasses

CONFIRM, DISMISS, UNSURE = "confirm_mismatch", "dismiss", "unsure"
DECISIONS = (CONFIRM, DISMISS, UNSURE)
DECISION_LABELS = {CONFIRM: "Confirmed mismatch", DISMISS: "Dismissed: record is right", UNSURE: "Unsure"}
UNDECIDED = "Undecided"
MISSING = "–"  # what a screen shows for an unknown value: never "None" or "nan"


@dataclass(frozen=True)
class Term:
    label: str  # on screen
    meaning: str  # the legend


COLUMNS: dict[str, Term] = {
    "bin_id": Term("Bin", "the bin's id (the photo's file name without extension)"),
    "split": Term("Split", "train, val or test when the bin came from a dataset; empty otherwise"),
    "expected_count": Term("Record", "items the inventory record says the bin holds"),
    "predicted_count": Term("Predicted", "the model's most likely count (6+: more than 5, from a model with an open "
                                         "top class)"),
    "decoded_count": Term("Best estimate", "the count with the least expected squared error under the model's "
                                           "probabilities (can differ from the most likely count)"),
    "mismatch_probability": Term("Mismatch probability", "1 - p(record): the model's probability that the bin does "
                                                         "not hold the recorded count; empty where it cannot say"),
    "predicted_count_differs": Term("Predicted count differs", "the most likely count is not the record's (a "
                                                               "separate fact from queued)"),
    "queued": Term("Queued", "in the review queue: mismatch probability at or above the threshold, or sent by hand, "
                             "and not decided since the latest prediction"),
    "sent_by_hand": Term("Sent by hand", "an analyst sent the bin to the queue (whatever its probability)"),
    "beyond_range": Term("Beyond range", "the record is above the top count of a closed model, which cannot check it: "
                                         "no mismatch probability"),
    "predicted_at": Term("Scored at", "when the model scored the photo (UTC)"),
    "items": Term("Items", "the record's items: quantity x name (ASIN)"),
    "decision": Term("Decision", "the latest decision: confirm_mismatch (Confirmed mismatch), dismiss (Dismissed: "
                                 "record is right), unsure (Unsure); empty: undecided"),
    "recounted_count": Term("Recount", "the analyst's count of the items, given with a confirmed mismatch"),
    "decided_by": Term("Decided by", "who made the latest decision"),
    "decided_at": Term("Decided at", "when (UTC)"),
    "review_id": Term("Review", "the decision's number (every decision is kept)"),
    "reviewer": Term("Reviewer", "who decided"),
    "note": Term("Note", "the analyst's note"),
    "model_version_id": Term("Model version", "the model version whose queue the decision was made in"),
    "created_at": Term("Decided at", "when (UTC)"),
    "undone_at": Term("Undone at", "when the reviewer undid this decision (UTC); empty: it stands"),
}


def label(code: str) -> str:
    return COLUMNS[code].label if code in COLUMNS else code.replace("_", " ")


def decision_label(code: object) -> str:
    """The decision as a person reads it; "Undecided" for none."""
    if code is None or (not isinstance(code, str) and pd.isna(code)):
        return UNDECIDED
    return DECISION_LABELS.get(str(code), str(code))


def count_text(value: object, classes: CountClasses | None = None) -> str:
    """A count as shown: "6+" for an open class, "–" when unknown, never "4.0" or "None"."""
    if value is None or pd.isna(value):
        return MISSING
    if isinstance(value, str):  # already a label ("6+")
        return value
    return classes.label(int(value)) if classes is not None else str(int(value))


def value_text(value: object, spec: str) -> str:
    """A value formatted with `spec` ("{:.1%}"), or "–" when there is none."""
    return MISSING if value is None else spec.format(value)


def probability_text(p: object) -> str:
    return MISSING if p is None or pd.isna(p) else f"{float(p):.0%}"


def flag_text(expected: object, predicted: str, probability: object, threshold: float) -> str:
    """The three numbers behind a flag, in one line: "record 3 · predicted 3 · mismatch probability 62%"."""
    queued = probability is not None and not pd.isna(probability) and float(probability) >= threshold
    return (f"record {count_text(expected)} · predicted {predicted} · mismatch probability "
            f"{probability_text(probability)} ({'at or above' if queued else 'below'} the queue threshold "
            f"{threshold:.0%})")


def legend_frame(codes: list[str] | pd.Index) -> pd.DataFrame:
    """What each CSV column means: code, on-screen label, meaning."""
    return pd.DataFrame([{"column": c, "shown as": label(c), "meaning": COLUMNS[c].meaning if c in COLUMNS else ""}
                         for c in codes])


def screen_frame(frame: pd.DataFrame, classes: CountClasses | None = None) -> pd.DataFrame:
    """A frame for st.dataframe: counts as labels, decisions and yes/no in words, "–" for unknown, human headers."""
    shown = frame.copy()
    for column in ("predicted_count", "decoded_count"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: count_text(v, classes))
    for column in ("expected_count", "recounted_count", "model_version_id", "review_id"):
        if column in shown:
            shown[column] = shown[column].map(count_text)
    if "decision" in shown:
        shown["decision"] = shown["decision"].map(decision_label)
    for column in ("predicted_count_differs", "queued", "sent_by_hand", "beyond_range"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: MISSING if v is None or pd.isna(v) else ("yes" if v else "no"))
    for column in ("note", "split", "decided_by", "reviewer"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "" if v is None or (not isinstance(v, str) and pd.isna(v))
                                              else v)
    for column in shown.columns:
        if pd.api.types.is_datetime64_any_dtype(shown[column]):
            shown[column] = shown[column].dt.strftime("%Y-%m-%d %H:%M:%S").fillna("")
    return shown.rename(columns={c: label(c) for c in shown.columns})
