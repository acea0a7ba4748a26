"""threshold.json: the "no match" threshold that eval.py --calibrate writes (beside
calibration.png) and index.py stores in an index.

    threshold          lowest best-hit cosine similarity to accept (null: the target
                       precision was not reached; then precision and recall are those
                       at best_threshold, where precision is highest)
    target_precision, precision, recall, unknown_accepted, unknown_share,
    known_queries, unknown_queries, at_precision {"0.9"/"0.95"/"0.99": threshold, recall}
                       (dml/retrieval/calibration.py defines them)
    model, embedding_size, image_shape, preprocessing, weights, weights_sha256: the
                       network scored (dml.run_record)
    data_dir, test_list or query_list + gallery_list, created
    flip_tta           true when the scores came from features averaged with their mirror
                       images (eval.py --flip_tta): refused by index.py, whose queries
                       are embedded without mirroring

A threshold holds for the network that produced the scores only: index.py refuses one
whose weights_sha256 differs from the index's.
"""
import json
import math
import os

from dml import run_record
from dml.cli import fmt_time
from dml.errors import UserError, first_line
from dml.outputs import write_set

from . import calibration, calibration_plot, open_set

FILE = "threshold.json"
PLOT = "calibration.png"
MAX_BYTES = 1 << 20
RECORD = ("model", "embedding_size", "image_shape", "data_dir", "test_list", "query_list", "gallery_list", "flip_tta")


def open_set_scores(scored):
    """OpenSetScores of eval.py's scored features (all against all, or query/gallery)."""
    if len(scored.fea) == 1:
        return open_set.all_against_all(scored.fea[0], scored.labels[0])
    return open_set.query_gallery(scored.fea[0], scored.labels[0], scored.fea[1], scored.labels[1])


def calibrate(args, scored, evaluated):
    """Score, choose, write DIR/threshold.json and DIR/calibration.png as one set, print
    the result; returns threshold.json's content. `evaluated`: eval.py's summary."""
    scores = open_set_scores(scored)
    points = calibration.curve(scores, args.unknown_share)
    choice = calibration.choose(points, args.target_precision, len(scores.unknown))
    content = calibration.summary(scores, points, choice, args.target_precision, args.unknown_share)
    content.update({key: evaluated[key] for key in RECORD if key in evaluated})
    network = run_record.describe(args.model, args.embedding_size, args.image_shape, args.pretrained_model)
    content.update(network.as_dict(), created=fmt_time())
    os.makedirs(args.calibrate, exist_ok=True)
    text = json.dumps(content, indent=1, sort_keys=True) + "\n"
    json_path, plot_path = os.path.join(args.calibrate, FILE), os.path.join(args.calibrate, PLOT)
    writers = {json_path: lambda handle: handle.write(text.encode())}
    drawn = calibration_plot.available()
    if drawn:
        figure = calibration_plot.draw(scores, points, choice, args.target_precision)
        writers[plot_path] = lambda handle: calibration_plot.save(figure, handle)
    write_set(writers, stale=(plot_path,))
    for line in result_lines(content):
        print(line)
    if drawn:
        print(f"calibration written to {json_path} and {plot_path}")
    else:
        print(f"calibration written to {json_path}; note: no picture of it: matplotlib is not installed "
              f"({calibration_plot.INSTALL})")
    return content


def result_lines(content):
    lines = [f"calibration: {content['known_queries']} queries with their item in the gallery (best hit right "
             f"for {content['known_correct_at_any_threshold']:.3f} of them), {content['unknown_queries']} with it "
             f"left out (weighted as {content['unknown_share']:g} of the queries)"]
    if content["threshold"] is None:
        lines.append(f"no threshold reaches precision {content['target_precision']:g} "
                     f"(best: {content['precision']:.4f} at threshold {content['best_threshold']:.6f}, recall "
                     f"{content['recall']:.4f}): "
                     f"threshold.json holds threshold null")
    else:
        lines.append(f"match threshold {content['threshold']:.6f} for precision {content['target_precision']:g}: "
                     f"precision {content['precision']:.4f}, recall {content['recall']:.4f}, "
                     f"{100 * content['unknown_accepted']:.1f}% of queries whose item is not in the gallery "
                     f"still accepted")
    return lines


def read(path):
    """(threshold, weights_sha256 or None) of a threshold.json, checked."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as err:
        raise UserError(f"--threshold_file {path!r}: {err.strerror}") from None
    if len(data) > MAX_BYTES:
        raise UserError(f"--threshold_file {path!r} is larger than {MAX_BYTES} bytes: not a threshold.json")
    try:
        content = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise UserError(f"--threshold_file {path!r} is not valid JSON ({first_line(err)[:200]})") from None
    value = content.get("threshold") if isinstance(content, dict) else None
    if value is None and isinstance(content, dict) and "threshold" in content:
        raise UserError(f"--threshold_file {path!r} holds no threshold: its calibration did not reach precision "
                        f"{content.get('target_precision')}; calibrate with a lower --target_precision")
    if type(value) not in (int, float) or not math.isfinite(value) or not -1.0 <= value <= 1.0:
        raise UserError(f"--threshold_file {path!r}: 'threshold' must be a cosine similarity from -1 to 1, "
                        f"not {str(value)[:40]!r}")
    if content.get("flip_tta") is True:
        raise UserError(f"--threshold_file {path!r} was calibrated on features averaged with their mirror images "
                        f"(eval.py --flip_tta); an index embeds its queries without mirroring: calibrate without "
                        f"--flip_tta")
    sha = content.get("weights_sha256")
    return float(value), sha if isinstance(sha, str) else None
