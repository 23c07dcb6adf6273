"""deqlib.stats against closed forms and brute-force enumeration (no scipy)."""

import itertools
import math
import statistics

import pytest

from deqlib import stats


def enumerated_sign_p(differences):
    """The two-sided sign test by enumerating all 2^n sign patterns of the non-zero ones."""
    signs = [d > 0 for d in differences if d != 0]
    n = len(signs)
    if n == 0:
        return 1.0
    observed = abs(sum(signs) - n / 2)
    extreme = sum(abs(sum(p) - n / 2) >= observed
                  for p in itertools.product((False, True), repeat=n))
    return extreme / 2 ** n


def test_sign_test_five_of_five_is_0_0625():
    assert stats.sign_test([0.1, 0.2, 0.3, 0.4, 0.5]) == 2 * 2 ** -5 == 0.0625
    assert stats.sign_test([-1, -2, -3, -4, -5]) == 0.0625
    assert stats.smallest_sign_p(5) == 0.0625
    assert stats.smallest_sign_p(6) == 0.03125 < 0.05 < stats.smallest_sign_p(5)


def test_sign_test_closed_forms():
    assert stats.sign_test([1, 1, 1, 1, -1]) == pytest.approx(2 * (1 + 5) / 32)   # 0.375
    assert stats.sign_test([1, 1, 1, 0]) == 0.25        # the zero is dropped: 3 of 3
    assert stats.sign_test([0, 0]) == 1.0
    assert stats.sign_test([1, -1, 1, -1]) == 1.0       # capped at 1
    assert stats.sign_test([2.0]) == 1.0                # one seed: 2 · 1/2


@pytest.mark.parametrize("n", range(1, 11))
def test_sign_test_matches_enumeration(n):
    for positive in range(n + 1):
        d = [1.0] * positive + [-1.0] * (n - positive)
        assert stats.sign_test(d) == pytest.approx(enumerated_sign_p(d), abs=1e-15)


@pytest.mark.parametrize("q", [0.6, 0.9, 0.975, 0.995])
def test_t_quantile_closed_forms(q):
    # ν = 1 is Cauchy: F(t) = 1/2 + atan(t)/π.
    assert stats.t_quantile(q, 1) == pytest.approx(math.tan(math.pi * (q - 0.5)), rel=1e-10)
    # ν = 2: F(t) = 1/2 + t/(2√(2+t²)), so t = α√(2/(1-α²)) with α = 2q - 1.
    alpha = 2 * q - 1
    assert stats.t_quantile(q, 2) == pytest.approx(alpha * math.sqrt(2 / (1 - alpha ** 2)),
                                                   rel=1e-10)
    assert stats.t_quantile(1 - q, 2) == pytest.approx(-stats.t_quantile(q, 2), rel=1e-12)


def test_t_cdf_other_closed_forms():
    for t in (-3.0, -0.4, 0.0, 0.7, 2.5):
        theta = math.atan(t / math.sqrt(3))           # ν = 3: 1/2 + (θ + sinθ cosθ)/π
        assert stats.student_t_cdf(t, 3) == pytest.approx(
            0.5 + (theta + math.sin(theta) * math.cos(theta)) / math.pi, abs=1e-14)
        # ν = 4: 1/2 + t(6 + t²)/(2(4 + t²)^{3/2})
        assert stats.student_t_cdf(t, 4) == pytest.approx(
            0.5 + t * (6 + t * t) / (2 * (4 + t * t) ** 1.5), abs=1e-14)
    assert stats.student_t_cdf(math.inf, 5) == 1.0 and stats.student_t_cdf(-math.inf, 5) == 0.0


def test_t_quantile_approaches_the_normal_one():
    normal = statistics.NormalDist().inv_cdf(0.975)
    assert abs(stats.t_quantile(0.975, 2001) - normal) < 2e-3
    assert stats.t_quantile(0.975, 4) > stats.t_quantile(0.975, 30) > normal


def test_t_interval_closed_form():
    d = [1.0, 2.0, 3.0]                               # mean 2, s = 1, ν = 2
    alpha = 0.95
    t = alpha * math.sqrt(2 / (1 - alpha ** 2))       # the ν = 2 quantile at 0.975
    lo, hi = stats.t_interval(d)
    assert lo == pytest.approx(2 - t / math.sqrt(3), rel=1e-10)
    assert hi == pytest.approx(2 + t / math.sqrt(3), rel=1e-10)
    lo10, hi10 = stats.t_interval([10 * x + 5 for x in d])   # affine equivariance
    assert (lo10, hi10) == pytest.approx((10 * lo + 5, 10 * hi + 5), rel=1e-10)
    narrow = stats.t_interval(d, level=0.5)
    assert lo < narrow[0] < 2 < narrow[1] < hi


def test_paired_three_same_sign_differences_are_resolved():
    """The review's case: -0.0039, -0.0038, -0.0037 on three seeds, which the old rule called
    "within": the interval lies below zero, while the sign test cannot go below 2/8."""
    a = [0.5211 - 0.0039, 0.6 - 0.0038, 0.55 - 0.0037]
    b = [0.5211, 0.6, 0.55]
    r = stats.paired(a, b)
    assert r["verdict"] == "a < b" and r["interval"][1] < 0
    assert (r["positive"], r["negative"], r["n"]) == (0, 3, 3)
    assert r["sign_p"] == 0.25
    assert stats.paired([1, 2, 3], [1.5, 1.0, 3.5])["verdict"] == "unresolved"
    line = stats.format_paired(r, scale=1, fmt="+.4f")
    assert line.startswith("-0.0038 [") and line.endswith("0+ 3-  p 0.2500  a < b")


def test_paired_runs_pairs_by_seed_and_skips_diverged():
    def run(model, seed, value, diverged=False):
        return {"model": model, "loss": "square", "seed": seed, "diverged": diverged,
                "history": [] if diverged else [{"test_acc": value}]}
    records = [run("a", 2, 0.9), run("a", 0, 0.8), run("a", 1, 0.7), run("b", 0, 0.5),
               run("b", 1, 0.6), run("b", 2, 0.0, diverged=True), run("b", 3, 0.1)]
    r = stats.paired_runs(records, "a", "b", loss="square")
    assert r["seeds"] == [0, 1]
    assert r["differences"] == pytest.approx([0.3, 0.1])
    with pytest.raises(ValueError, match="at least 2 common seeds"):
        stats.paired_runs(records, "a", "b", loss="cross_entropy")
    with pytest.raises(ValueError, match="record no 'test_loss'"):
        stats.paired_runs(records, "a", "b", loss="square", metric="test_loss")


def test_errors_say_what_was_wrong():
    with pytest.raises(ValueError, match="got 3 and 2 values"):
        stats.paired_differences([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        stats.paired_differences([], [])
    with pytest.raises(ValueError, match="finite"):
        stats.sign_test([1.0, math.nan])
    with pytest.raises(TypeError, match="sequence of real numbers"):
        stats.sign_test(0.5)
    with pytest.raises(TypeError, match=r"differences\[1\]"):
        stats.t_interval([1.0, "2"])
    with pytest.raises(ValueError, match="at least 2 paired differences"):
        stats.t_interval([1.0])
    with pytest.raises(ValueError, match="level"):
        stats.t_interval([1.0, 2.0], level=95)
    with pytest.raises(ValueError, match="q must lie in"):
        stats.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df"):
        stats.t_quantile(0.9, 0)
    with pytest.raises(TypeError, match="df"):
        stats.student_t_cdf(1.0, 2.0)


def test_format_paired_prints_the_given_words_for_the_verdict():
    r = stats.paired([1.0, 2.0, 3.0], [0.0, 0.5, 1.0])
    words = {"a > b": "DELM ahead", "a < b": "linear ahead", "unresolved": "unclear"}
    assert stats.format_paired(r, words=words).endswith("p 0.2500  DELM ahead")
