"""Paired comparisons over seeds: differences, an exact sign test and a Student t-interval.

Two models trained with the same seed share their start and their batches, so their results
pair up by seed: the question "is model a better than model b?" is a question about the paired
differences :math:`d_k = a_k - b_k`, one per seed :math:`k = 1, \\dots, n`, not about the two
columns' spreads. This module gives the two classical answers, written without scipy:

* :func:`sign_test`, the exact two-sided sign test. Under the null hypothesis that a
  difference is as likely positive as negative (independent seeds), the number of positive
  differences among the :math:`n` non-zero ones is Binomial(:math:`n`, 1/2), and

  .. math:: p = \\min\\Bigl(1,\\; 2\\sum_{i=0}^{j}\\binom{n}{i}2^{-n}\\Bigr),
     \\qquad j = \\min(\\#\\{k : d_k > 0\\}, \\#\\{k : d_k < 0\\}).

  It assumes nothing about the size of the differences. Its smallest p-value is
  :math:`2\\cdot2^{-n}` (all :math:`n` of one sign): 0.0625 for five seeds, so **five seeds can
  never reach p < 0.05**; six are needed (0.03125).
* :func:`t_interval`, the Student t confidence interval of the mean difference,

  .. math:: \\bar d \\pm t_{n-1,\\,(1+\\mathrm{level})/2}\\, s_d/\\sqrt n,
     \\qquad s_d^2 = \\frac{1}{n-1}\\sum_k (d_k - \\bar d)^2,

  at confidence level ``level`` (0.95 for a 95 % interval). It assumes the differences are
  independent draws from a normal distribution; with five seeds that cannot be checked, so read
  it together with the sign test. The t quantile comes from the closed form of Student's
  distribution for integer degrees of freedom (:func:`student_t_cdf`), inverted by bisection
  (:func:`t_quantile`).

:func:`paired` combines them; :func:`paired_runs` pairs the last epoch of stored
:mod:`deqlib.experiments` runs by seed; :func:`format_paired` prints one line.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence

from . import validate

__all__ = [
    "paired_differences",
    "sign_test",
    "smallest_sign_p",
    "student_t_cdf",
    "t_quantile",
    "t_interval",
    "paired",
    "paired_runs",
    "format_paired",
]


def _values(name: str, values) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of real numbers, one per seed; got "
                        f"{name}={values!r} of type {type(values).__name__}")
    return [validate.real(f"{name}[{k}]", v) for k, v in enumerate(values)]


def paired_differences(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """The differences :math:`a_k - b_k`, seed by seed (``a[k]`` and ``b[k]`` share seed k).

    Args:
        a: model a's results, one real number per seed.
        b: model b's results on the same seeds, in the same order.

    Returns:
        The list of the n differences ``a[k] - b[k]``.

    Raises:
        TypeError: a value that is not a real number.
        ValueError: NaN or infinite values, no values, or ``a`` and ``b`` of different lengths
            (the pairing would be lost).
    """
    a, b = _values("a", a), _values("b", b)
    if len(a) != len(b):
        raise ValueError(f"a and b must have one value per seed each, paired by position; got "
                         f"{len(a)} and {len(b)} values")
    if not a:
        raise ValueError("a and b are empty: pass one value per seed")
    return [x - y for x, y in zip(a, b)]


def sign_test(differences: Sequence[float]) -> float:
    """The exact two-sided sign test's p-value for "positive and negative are equally likely".

    Zero differences carry no sign and are dropped (the usual convention); with no non-zero
    difference left the p-value is 1. With :math:`n` non-zero differences, :math:`j` of them
    of the rarer sign, :math:`p = \\min(1, 2\\sum_{i\\le j}\\binom{n}{i}2^{-n})` (as in the
    module's formula).

    Args:
        differences: the paired differences :math:`d_k`, one real number per seed (e.g. from
            :func:`paired_differences`).

    Returns:
        The p-value, in (0, 1].
    """
    d = _values("differences", differences)
    positive, negative = sum(x > 0 for x in d), sum(x < 0 for x in d)
    n, k = positive + negative, min(positive, negative)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def smallest_sign_p(n: int) -> float:
    """The smallest p-value the two-sided sign test can give on ``n`` seeds: :math:`2\\cdot2^{-n}`
    (capped at 1), reached when all ``n`` differences have the same sign.

    Args:
        n: the number of seeds (non-zero differences), ≥ 1.

    Returns:
        The p-value, a float.
    """
    n = validate.positive_integer("n", n, "the number of seeds")
    return min(1.0, 2 / 2 ** n)


def student_t_cdf(t: float, df: int) -> float:
    r""":math:`P(T \le t)` for Student's t with ``df`` (an integer) degrees of freedom.

    In closed form (the classical finite series, Abramowitz and Stegun §26.7): with
    :math:`\theta = \arctan(|t|/\sqrt\nu)`, :math:`P(|T| \le |t|)` is
    :math:`\frac{2}{\pi}\bigl(\theta + \sin\theta\cos\theta
    \sum_{j=0}^{(\nu-3)/2}a_j\cos^{2j}\theta\bigr)` for odd :math:`\nu` (the sum empty at
    :math:`\nu = 1`; :math:`a_0 = 1`, :math:`a_j = a_{j-1}\,2j/(2j+1)`) and
    :math:`\sin\theta\sum_{j=0}^{(\nu-2)/2}b_j\cos^{2j}\theta` for even :math:`\nu`
    (:math:`b_0 = 1`, :math:`b_j = b_{j-1}(2j-1)/(2j)`). The distribution is symmetric about 0,
    so :math:`P(T \le t) = \frac12\bigl(1 + \operatorname{sign}(t)\,P(|T| \le |t|)\bigr)`,
    which is what is returned.

    Args:
        t: the point, a real number (±∞ allowed).
        df: the degrees of freedom ν, a positive integer.

    Returns:
        The probability, in [0, 1].
    """
    t = validate.real("t", t, finite=False)
    df = validate.positive_integer("df", df, "degrees of freedom")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:
        total, term = 0.0, 1.0
        for j in range((df - 1) // 2):          # j = 0 .. (ν-3)/2
            total += term
            term *= c2 * (2 * j + 2) / (2 * j + 3)
        inside = 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    else:
        total, term = 0.0, 1.0
        for j in range(df // 2):                # j = 0 .. (ν-2)/2
            total += term
            term *= c2 * (2 * j + 1) / (2 * j + 2)
        inside = math.sin(theta) * total
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(q: float, df: int) -> float:
    """The ``q``-quantile of Student's t with ``df`` degrees of freedom (bisection on
    :func:`student_t_cdf`, to about 1e-12 relative).

    Args:
        q: the probability, in (0, 1).
        df: the degrees of freedom, a positive integer.

    Returns:
        The t with :math:`P(T \\le t) = q`, a float.
    """
    q = validate.interval("q", q, 0, 1, "a probability", closed=(False, False))
    df = validate.positive_integer("df", df, "degrees of freedom")
    if q < 0.5:
        return -t_quantile(1 - q, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < q:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = (lo + hi) / 2
        if student_t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (lo + hi) / 2


def t_interval(differences: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """The Student t interval for the mean of the differences at the confidence level ``level``:
    :math:`\\bar d \\pm t_{n-1,(1+\\mathrm{level})/2}\\,s_d/\\sqrt n`.

    Args:
        differences: the paired differences :math:`d_k`, one real number per seed, at least 2.
        level: the confidence level, in (0, 1); 0.95 gives the 95% interval.

    Returns:
        ``(low, high)``, the interval's ends (floats).

    Raises:
        ValueError: fewer than two differences (no spread to estimate), or ``level`` outside
            (0, 1).
    """
    d = _values("differences", differences)
    level = validate.interval("level", level, 0, 1, "the confidence level",
                              closed=(False, False))
    if len(d) < 2:
        raise ValueError(f"a t-interval needs at least 2 paired differences to estimate their "
                         f"spread; got {len(d)}. Run more seeds.")
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    half = t_quantile((1 + level) / 2, len(d) - 1) * sd / math.sqrt(len(d))
    return mean - half, mean + half


def paired(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> dict:
    """Everything about the paired differences ``a[k] - b[k]``.

    Args:
        a: model a's results, one real number per seed.
        b: model b's results on the same seeds, in the same order.
        level: the confidence level of the t-interval, in (0, 1).

    Returns:
        A dict with ``differences``, ``n``, ``mean`` and ``std`` (of the differences),
        ``interval`` (:func:`t_interval` at ``level``) and ``level``, ``positive`` and
        ``negative`` (the counts of each sign), ``sign_p`` (:func:`sign_test`) and ``verdict``:
        ``"a > b"`` or ``"a < b"`` when the interval excludes 0, else ``"unresolved"``.
    """
    d = paired_differences(a, b)
    lo, hi = t_interval(d, level)
    verdict = "a > b" if lo > 0 else "a < b" if hi < 0 else "unresolved"
    return {"differences": d, "n": len(d), "mean": statistics.fmean(d),
            "std": statistics.stdev(d), "interval": (lo, hi), "level": level,
            "positive": sum(x > 0 for x in d), "negative": sum(x < 0 for x in d),
            "sign_p": sign_test(d), "verdict": verdict}


def paired_runs(records: Iterable[dict], a: str, b: str, *, loss: str,
                metric: str = "test_acc", level: float = 0.95) -> dict:
    """:func:`paired` on the last epoch's ``metric`` of stored runs of models ``a`` and ``b``
    (:func:`deqlib.experiments.load_runs` records), paired by seed; diverged runs are left out.

    Args:
        records: the runs, as :func:`deqlib.experiments.load_runs` returns them (dicts with
            ``model``, ``loss``, ``seed``, ``diverged`` and ``history``).
        a: the first model's name, e.g. ``"delm"``; the differences are a − b.
        b: the second model's name, e.g. ``"linear"``.
        loss: the training loss of the runs to compare, ``"square"`` or ``"cross_entropy"``
            (required: runs on different losses do not pair).
        metric: the key of the last epoch's history row to compare, e.g. ``"test_acc"`` or
            ``"train_loss"``.
        level: the confidence level of the t-interval, in (0, 1).

    Returns:
        :func:`paired`'s dict, with ``seeds`` added (the seeds both models finished, in order).

    Raises:
        ValueError: fewer than two seeds with finished runs of both models on ``loss``, or a
            metric the runs do not record.
    """
    by_seed = {a: {}, b: {}}
    for r in records:
        if r.get("model") in by_seed and r.get("loss") == loss and not r.get("diverged") \
                and r.get("history"):
            last = r["history"][-1]
            if metric not in last:
                raise ValueError(f"the runs record no {metric!r}; their history has "
                                 f"{sorted(last)}")
            by_seed[r["model"]][r["seed"]] = last[metric]
    seeds = sorted(set(by_seed[a]) & set(by_seed[b]))
    if len(seeds) < 2:
        raise ValueError(f"need finished runs of both {a!r} and {b!r} with loss={loss!r} on at "
                         f"least 2 common seeds; found seeds {seeds}")
    result = paired([by_seed[a][s] for s in seeds], [by_seed[b][s] for s in seeds], level=level)
    return {**result, "seeds": seeds}


def format_paired(result: dict, *, scale: float = 1.0, fmt: str = "+.2f",
                  words: dict | None = None) -> str:
    """One line: the mean difference, the interval, the signs, the sign test's p and the verdict,
    e.g. ``+0.32 [-0.05, +0.69]  5+ 0-  p 0.0625  unresolved`` (values times ``scale``).

    Args:
        result: a dict from :func:`paired` or :func:`paired_runs`.
        scale: multiplies the mean and the interval before printing, e.g. 100 to print an
            accuracy difference in percentage points (the p-value and counts are not scaled).
        fmt: the format specification of the three numbers, e.g. ``"+.2f"`` (signed, two
            decimals).
        words: maps the verdicts ``"a > b"``, ``"a < b"``, ``"unresolved"`` to the words to
            print (e.g. ``{"a > b": "DELM ahead", ...}``); ``None`` prints the verdicts
            themselves.

    Returns:
        The line, a str (no newline).
    """
    lo, hi = result["interval"]
    verdict = result["verdict"] if words is None else words[result["verdict"]]
    return (f"{scale * result['mean']:{fmt}} [{scale * lo:{fmt}}, {scale * hi:{fmt}}]  "
            f"{result['positive']}+ {result['negative']}-  p {result['sign_p']:.4f}  "
            f"{verdict}")
