"""The "no match" threshold: the lowest best-hit score a search should accept to reach
a target precision, from open-set scores (open_set.py).

A search accepts a query when its best hit scores at least the threshold t, and then
answers that hit. With u the share of queries whose item is not in the gallery
(--unknown_share; each role's queries weighted so the mix is u : 1 - u):

    recall(t)    = share of known-role queries accepted with a hit of the right class
    precision(t) = (1-u) recall(t) / ((1-u) accepted_known(t) + u accepted_unknown(t))

accepted_known / accepted_unknown: the shares of each role's queries accepted. An
accepted unknown-role query is always an error (its item is not there), and so is an
accepted known-role query whose best hit is another class. With u = 0.5 and as many
queries in each role, precision is simply right answers / accepted queries.

The chosen threshold is the lowest score at which precision reaches the target: the
one that keeps the most recall. Precision need not rise steadily with the threshold;
the curve (PNG) shows it. Computed exactly: the scores are sorted once and counted by
cumulative sums, one point per distinct score.
"""
from dataclasses import dataclass

import numpy as np

from dml.errors import UserError


@dataclass
class Curve:
    """thresholds descending (every distinct score); at each, counts of the queries
    scoring at least it: known_accepted, correct_accepted (known role, right class),
    unknown_accepted; precision and recall as defined above."""

    thresholds: np.ndarray
    known_accepted: np.ndarray
    correct_accepted: np.ndarray
    unknown_accepted: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def precision_of(correct, known, unknown, num_known, num_unknown, unknown_share):
    """Precision from counts of accepted queries (arrays or numbers), the formula above;
    nan where nothing counts as accepted."""
    right = (1.0 - unknown_share) * np.asarray(correct, np.float64) / num_known
    accepted = (1.0 - unknown_share) * np.asarray(known, np.float64) / num_known \
        + unknown_share * np.asarray(unknown, np.float64) / num_unknown
    return np.divide(right, accepted, out=np.full(np.shape(accepted), np.nan), where=accepted > 0)


def curve(scores, unknown_share=0.5):
    """The precision/recall Curve of OpenSetScores at every distinct score."""
    num_known, num_unknown = len(scores.known), len(scores.unknown)
    if num_known == 0:
        raise UserError("no query has another image of its class in the gallery: calibration needs classes with "
                        "two or more images")
    if num_unknown == 0 and unknown_share > 0:
        raise UserError("every gallery image is of the query's class: calibration needs two or more classes")
    values = np.concatenate([scores.known, scores.unknown]).astype(np.float32)
    is_known = np.arange(len(values)) < num_known
    is_correct = np.concatenate([scores.correct.astype(bool), np.zeros(num_unknown, bool)])
    order = np.argsort(-values, kind="stable")
    ranked = values[order]
    last = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])  # the last of each run of equal scores
    known = np.cumsum(is_known[order])[last]
    correct = np.cumsum(is_correct[order])[last]
    unknown = (last + 1) - known
    precision = precision_of(correct, known, unknown, num_known, max(num_unknown, 1), unknown_share)
    return Curve(ranked[last], known, correct, unknown, precision, correct / num_known)


@dataclass
class Choice:
    """The threshold for a target precision (None when no threshold reaches it), the
    precision and recall there, and the share of unknown-role queries still accepted."""

    threshold: object
    precision: float
    recall: float
    unknown_accepted: float
    best_threshold: object = None  # when the target is not reached: where precision is highest


def choose(points, target_precision, num_unknown):
    """The lowest threshold whose precision reaches the target (the most recall)."""
    defined = np.nan_to_num(points.precision, nan=-1.0)
    reached = np.flatnonzero(defined >= target_precision)
    if len(reached) == 0:
        best = int(np.argmax(defined))
        return Choice(None, float(points.precision[best]), float(points.recall[best]),
                      float(points.unknown_accepted[best] / max(num_unknown, 1)), float(points.thresholds[best]))
    at = reached[-1]
    return Choice(float(points.thresholds[at]), float(points.precision[at]), float(points.recall[at]),
                  float(points.unknown_accepted[at] / max(num_unknown, 1)))


def summary(scores, points, choice, target_precision, unknown_share):
    """threshold.json's figures (the caller adds what was evaluated and with which network)."""
    more = {}
    for target in (0.9, 0.95, 0.99):
        other = choose(points, target, len(scores.unknown))
        more[f"{target:g}"] = {"threshold": other.threshold,
                               "recall": other.recall if other.threshold is not None else None}
    best = {} if choice.threshold is not None else {"best_threshold": choice.best_threshold}
    return {"threshold": choice.threshold, "target_precision": target_precision, **best,
            "reached": choice.threshold is not None, "precision": choice.precision, "recall": choice.recall,
            "unknown_accepted": choice.unknown_accepted, "unknown_share": unknown_share,
            "known_queries": int(len(scores.known)), "unknown_queries": int(len(scores.unknown)),
            "known_correct_at_any_threshold": float(np.mean(scores.correct)),
            "at_precision": more}
