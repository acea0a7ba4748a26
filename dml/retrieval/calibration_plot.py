"""The calibration picture: the two best-score distributions (query's item in the
gallery / not in it) and precision and recall against the threshold, the chosen
threshold marked. matplotlib (optional: requirements-calibrate.txt) through its
object API and the Agg canvas, so no window and no global plotting state."""
import importlib.util

import numpy as np

INSTALL = "pip install -r requirements-calibrate.txt (or the package's [calibrate] extra)"


def available():
    """Whether matplotlib can be imported (without it, eval.py --calibrate writes
    threshold.json alone and says so in one line)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except ValueError:  # a module set to None in sys.modules
        return False


def draw(scores, points, choice, target_precision):
    """A matplotlib Figure of the calibration."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    left, right = figure.subplots(1, 2)
    edges = np.linspace(min(scores.known.min(), scores.unknown.min(initial=1.0)),
                        max(scores.known.max(), scores.unknown.max(initial=-1.0)), 41)
    right_hits, wrong_hits = scores.known[scores.correct], scores.known[~scores.correct]
    left.hist([right_hits, wrong_hits], bins=edges, stacked=True, color=["tab:green", "tab:orange"], alpha=0.75,
              label=[f"item in gallery: best hit right ({len(right_hits)})",
                     f"item in gallery: best hit wrong ({len(wrong_hits)})"])
    left.hist(scores.unknown, bins=edges, histtype="step", linewidth=2, color="tab:red",
              label=f"item not in gallery ({len(scores.unknown)})")
    left.set(xlabel="best hit's cosine similarity", ylabel="queries", title="best-hit scores")
    right.plot(points.thresholds, points.precision, color="tab:blue", label="precision")
    right.plot(points.thresholds, points.recall, color="tab:green", label="recall (right hit accepted)")
    right.axhline(target_precision, color="grey", linestyle=":", label=f"target precision {target_precision:g}")
    right.set(xlabel="threshold (accept the best hit when its score >= threshold)", ylim=(-0.02, 1.02),
              title="precision and recall against the threshold")
    if choice.threshold is not None:
        for axes in (left, right):
            axes.axvline(choice.threshold, color="black", linestyle="--",
                         label=f"threshold {choice.threshold:.4f}" if axes is right else None)
        right.set_title(f"threshold {choice.threshold:.4f}: precision {choice.precision:.3f}, "
                        f"recall {choice.recall:.3f}")
    else:
        right.set_title(f"no threshold reaches precision {target_precision:g}")
    left.legend(fontsize="small")
    right.legend(fontsize="small", loc="lower left")
    return figure


def save(figure, handle):
    figure.savefig(handle, format="png")
