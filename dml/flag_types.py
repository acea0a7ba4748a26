"""argparse `type=` functions that validate a flag's value where the flag is declared.

Each parses the text and raises argparse.ArgumentTypeError with a sentence saying what
the value must be; the scripts' parser prints it as one line (`utility.ArgumentParser`).
"""
import argparse
import math


def _number(text, kind):
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None


def int_at_least(low):
    """An integer >= low."""
    def parse(text):
        value = _number(text, int)
        if value < low:
            what = {0: "0 or more", 1: "positive"}.get(low, f"at least {low}")
            raise argparse.ArgumentTypeError(f"{value} must be {what}")
        return value

    parse.__name__ = f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)
nonnegative_int = int_at_least(0)


class DefaultSeed(int):
    """The default of --seed: an int (printed and saved as the number), marked so the
    training scripts can tell "not given" from the same value on the command line."""


def int_in(low, high):
    """An integer in [low, high]."""
    def parse(text):
        value = _number(text, int)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} must be an integer from {low} to {high}")
        return value

    parse.__name__ = f"int_in_{low}_{high}"
    return parse


def float_in(low=0.0, high=math.inf, low_inclusive=True, high_inclusive=False, unit=""):
    """A finite float in the interval given (by default [0, inf))."""
    lower = "[" if low_inclusive else "("
    upper = "]" if high_inclusive else ")"
    interval = f"{lower}{low:g}, {'inf' if high == math.inf else f'{high:g}'}{upper}{unit}"

    def parse(text):
        value = _number(text, float)
        above = value >= low if low_inclusive else value > low
        below = value <= high if high_inclusive else value < high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"{text} must be a number in {interval}")
        return value

    parse.__name__ = f"float_in_{interval}"
    return parse


positive_float = float_in(0.0, low_inclusive=False)
nonnegative_float = float_in(0.0)


def parse_increasing_ints(text):
    """'15000,25000' -> [15000, 25000]: positive, strictly increasing integers."""
    try:
        values = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        values = None
    if not values or any(v <= 0 for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise argparse.ArgumentTypeError(f"{text!r} must be positive, strictly increasing integers, "
                                         f"e.g. 15000,25000")
    return values


def increasing_ints(text):
    """Checks the text as parse_increasing_ints does and keeps it as it was written (the
    configuration block and state.json show flags as given)."""
    parse_increasing_ints(text)
    return text


def choice(*names, what="choices"):
    """One of `names` (argparse's `choices` with a one-line message naming `what` they are)."""
    def parse(text):
        if text not in names:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of the available {what}: {', '.join(names)}")
        return text

    parse.__name__ = "choice"
    return parse


def finite_float(text):
    """Any finite number."""
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number")
    return value


def parse_adam_betas(text):
    """'0.9,0.999' -> (0.9, 0.999): two numbers in [0, 1)."""
    parts = str(text).split(",")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or not all(math.isfinite(v) and 0 <= v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must be two numbers in [0, 1) separated by a comma "
                                         f"(beta1,beta2), e.g. 0.9,0.999")
    return values


def kept_as_written(parse):
    """An argparse type that checks the text with `parse` and keeps it as written (the
    configuration block and the run's record then show what the user typed)."""
    def check(text):
        parse(text)
        return text
    check.__name__ = parse.__name__
    return check


adam_betas = kept_as_written(parse_adam_betas)
