"""Float64 numpy versions of the losses, written from their published formulas.

Deliberately plain (loops, direct formulas) and independent of `losses/`: the tests
compare the Paddle layers against these.
"""
import math

import numpy as np


def unit_rows(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def cross_entropy_with_probs(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    cost = np.array([[-math.log(probs[i, labels[i]])] for i in range(len(labels))])
    return cost, probs


def softmax_loss(x, labels, weight, bias):
    """weight [D, C], bias [C]."""
    return cross_entropy_with_probs(x @ weight + bias, labels)


def arcmargin_loss(x, labels, weight, margin, scale, easy_margin):
    """weight [C, D]."""
    cos = unit_rows(x) @ unit_rows(weight).T
    logits = scale * cos.copy()
    for i, label in enumerate(labels):
        c = cos[i, label]
        sin = math.sqrt(1.0 - c * c + 1e-6)
        phi = c * math.cos(margin) - sin * math.sin(margin)
        if easy_margin:
            phi = phi if c > 0 else c
        else:
            phi = phi if c > math.cos(math.pi - margin) else c - math.sin(math.pi - margin) * margin
        logits[i, label] = scale * phi
    return cross_entropy_with_probs(logits, labels)


def triplet_loss(x, margin):
    x = unit_rows(x)
    costs = []
    for a, p, n in x.reshape(-1, 3, x.shape[1]):
        costs.append(max(0.0, np.sum((a - p) ** 2) + margin - np.sum((a - n) ** 2)))
    return np.array(costs)


def sq_dist(u, v):
    return float(np.sum((u - v) ** 2))


def positives_and_negatives(x, samples_each_class, i):
    """Squared distances of row i to its class block (self excluded) and to all others."""
    block = i // samples_each_class
    pos = [sq_dist(x[i], x[j]) for j in range(len(x)) if j // samples_each_class == block and j != i]
    neg = [sq_dist(x[i], x[j]) for j in range(len(x)) if j // samples_each_class != block]
    return np.array(pos), np.array(neg)


def quadruplet_loss(x, samples_each_class, margin):
    x = unit_rows(x)
    pos_max, neg_min = -np.inf, np.inf
    for i in range(len(x)):
        pos, neg = positives_and_negatives(x, samples_each_class, i)
        pos_max, neg_min = max(pos_max, pos.max()), min(neg_min, neg.min())
    return max(0.0, pos_max - neg_min + margin)


def eml_loss(x, samples_each_class, beta=1e5, t=20.0):
    def f(theta, b):
        return math.log(1 + beta * theta * math.exp(b)) / math.log(1 + beta)

    def g(theta, b):
        return (math.log(theta) + b + math.log(beta)) / math.log(1 + beta)

    costs = []
    for i in range(len(x)):
        pos, neg = positives_and_negatives(x, samples_each_class, i)
        theta = np.mean(np.exp(pos - pos.max())) * np.mean(np.exp(-(neg - neg.min())))
        bias = pos.max() - neg.min()
        costs.append([f(theta, min(bias, t)) + g(theta, max(bias, t)) - f(theta, t)])
    return np.array(costs)


def npairs_loss(x, labels, reg_lambda, samples_each_class=2):
    anchors, positives = x[0::2], x[1::2]
    anchor_labels, positive_labels = labels[0::2], labels[1::2]
    total = 0.0
    for i, a in enumerate(anchors):
        logits = positives @ a
        log_probs = logits - logits.max() - math.log(np.sum(np.exp(logits - logits.max())))
        target = (positive_labels == anchor_labels[i]) / (samples_each_class - 1)
        total += -np.sum(target * log_probs)
    reg = np.mean(np.sum(x**2, axis=1))
    return total / len(anchors) + 0.5 * reg_lambda * reg


def numeric_grad(fn, x, h=1e-6):
    """Central differences of the scalar fn at x (float64)."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        grad[idx] = (fn(up) - fn(down)) / (2 * h)
    return grad


# ---------------------------------------------------------------- the losses added after the original six


def logsumexp(values):
    """log sum exp(v), shifted by the max so gamma = 256 cannot overflow float64."""
    values = list(values)
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def log1p_sum_exp(values):
    """log(1 + sum exp(v)); 0 for an empty sum."""
    return logsumexp([0.0] + list(values))


def softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def cosface_loss(x, labels, weight, scale, margin):
    """weight [C, D]."""
    cos = unit_rows(x) @ unit_rows(weight).T
    logits = scale * cos
    for i, label in enumerate(labels):
        logits[i, label] = scale * (cos[i, label] - margin)
    return cross_entropy_with_probs(logits, labels)


def subcenter_arcmargin_loss(x, labels, weight, sub_centers, margin, scale, easy_margin):
    """weight [C * K, D], row c * K + k is centre k of class c."""
    xn, wn = unit_rows(x), unit_rows(weight)
    classes = weight.shape[0] // sub_centers
    cos = np.zeros((len(x), classes))
    for i in range(len(x)):
        for c in range(classes):
            cos[i, c] = max(float(xn[i] @ wn[c * sub_centers + k]) for k in range(sub_centers))
    logits = scale * cos
    for i, label in enumerate(labels):
        c = cos[i, label]
        phi = c * math.cos(margin) - math.sqrt(1.0 - c * c + 1e-6) * math.sin(margin)
        if easy_margin:
            phi = phi if c > 0 else c
        elif c <= math.cos(math.pi - margin):
            phi = c - math.sin(math.pi - margin) * margin
        logits[i, label] = scale * phi
    return cross_entropy_with_probs(logits, labels)


def proxy_anchor_loss(x, labels, proxies, alpha, margin):
    s = unit_rows(x) @ unit_rows(proxies).T
    present = sorted(set(int(y) for y in labels))
    pos = sum(
        log1p_sum_exp(-alpha * (s[i, c] - margin) for i in range(len(x)) if labels[i] == c) for c in present
    )
    neg = sum(
        log1p_sum_exp(alpha * (s[i, c] + margin) for i in range(len(x)) if labels[i] != c)
        for c in range(len(proxies))
    )
    return pos / len(present) + neg / len(proxies)


def pair_sets(x, labels, ref=None, ref_labels=None):
    """(S [N, M], P, Nn, others): P[i], Nn[i], others[i] are lists of reference columns.

    Without a reference set the batch is its own (j != i for P and others); with one
    (unit rows already) there is no j != i exclusion."""
    xn = unit_rows(x)
    if ref is None:
        ref, ref_labels, own = xn, labels, True
    else:
        own = False
    sim = xn @ ref.T
    pos, neg, others = [], [], []
    for i in range(len(x)):
        cols = [j for j in range(len(ref)) if not (own and j == i)]
        pos.append([j for j in cols if ref_labels[j] == labels[i]])
        neg.append([j for j in cols if ref_labels[j] != labels[i]])
        others.append(cols)
    return sim, pos, neg, others


def multi_similarity_loss(x, labels, alpha, beta, base, epsilon, ref=None, ref_labels=None):
    s, pos, neg, _ = pair_sets(x, labels, ref, ref_labels)
    costs = []
    for i in range(len(x)):
        pos_min = min((s[i, j] for j in pos[i]), default=math.inf)
        neg_max = max((s[i, k] for k in neg[i]), default=-math.inf)
        kept_neg = [k for k in neg[i] if s[i, k] > pos_min - epsilon]
        kept_pos = [j for j in pos[i] if s[i, j] < neg_max + epsilon]
        costs.append(
            log1p_sum_exp(-alpha * (s[i, j] - base) for j in kept_pos) / alpha
            + log1p_sum_exp(beta * (s[i, k] - base) for k in kept_neg) / beta
        )
    return float(np.mean(costs))


def circle_loss(x, labels, margin, gamma, ref=None, ref_labels=None, weights_at=None):
    """a_p, a_n are constants: they are computed at `weights_at` (default x itself), so
    finite differences with weights_at fixed give the layer's gradient."""
    s, pos, neg, _ = pair_sets(x, labels, ref, ref_labels)
    w = s if weights_at is None else pair_sets(weights_at, labels, ref, ref_labels)[0]
    costs = []
    for i in range(len(x)):
        if not pos[i] or not neg[i]:
            continue
        lse_n = logsumexp(gamma * max(w[i, n] + margin, 0.0) * (s[i, n] - margin) for n in neg[i])
        lse_p = logsumexp(-gamma * max(1 + margin - w[i, p], 0.0) * (s[i, p] - 1 + margin) for p in pos[i])
        costs.append(softplus(lse_n + lse_p))
    return float(np.mean(costs)) if costs else 0.0


def supcon_loss(x, labels, temperature, ref=None, ref_labels=None):
    s, pos, _, others = pair_sets(x, labels, ref, ref_labels)
    costs = []
    for i in range(len(x)):
        if not pos[i]:
            continue
        log_denominator = logsumexp(s[i, a] / temperature for a in others[i])
        costs.append(-np.mean([s[i, p] / temperature - log_denominator for p in pos[i]]))
    return float(np.mean(costs)) if costs else 0.0


def contrastive_loss(x, labels, pos_margin, neg_margin, ref=None, ref_labels=None):
    xn = unit_rows(x)
    refs = xn if ref is None else ref
    _, pos, neg, _ = pair_sets(x, labels, ref, ref_labels)
    dist = np.sqrt(np.sum((xn[:, None, :] - refs[None, :, :]) ** 2, axis=2))
    pos_terms = [dist[i, j] - pos_margin for i in range(len(x)) for j in pos[i] if dist[i, j] > pos_margin]
    neg_terms = [neg_margin - dist[i, j] for i in range(len(x)) for j in neg[i] if dist[i, j] < neg_margin]
    return (float(np.mean(pos_terms)) if pos_terms else 0.0) + (float(np.mean(neg_terms)) if neg_terms else 0.0)


def trihard_loss(x, labels, margin, ref=None, ref_labels=None):
    xn = unit_rows(x)
    refs = xn if ref is None else ref
    _, pos, neg, _ = pair_sets(x, labels, ref, ref_labels)
    dist = np.sum((xn[:, None, :] - refs[None, :, :]) ** 2, axis=2)
    costs = []
    for i in range(len(x)):
        if not pos[i] or not neg[i]:
            continue
        hardest_pos = max(dist[i, j] for j in pos[i])
        hardest_neg = min(dist[i, k] for k in neg[i])
        costs.append(max(0.0, hardest_pos - hardest_neg + margin))
    return float(np.mean(costs)) if costs else 0.0
