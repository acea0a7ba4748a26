"""Float64 numpy versions of the losses, written from the formulas in DESIGN.md.

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
