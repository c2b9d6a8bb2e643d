"""tnbenchstat -- paired ratios of benchmark rounds, with their spread.

The benchmarks interleave the variants within each round, so round i of
variant A and round i of variant B ran under the same load: their ratio
is a paired observation. paired() gives the geometric mean of those
ratios and a 95 % confidence interval (Student's t on the log ratios).
With 3 rounds the interval is wide; it says how fine a difference this
run could tell apart, which the median alone does not.
"""

import math
import statistics

# two-sided 95 % quantiles of Student's t, by degrees of freedom
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086]


def paired(num, den):
    """(geometric mean, low, high) of num[i]/den[i]; low/high are None
    with fewer than two pairs."""
    logs = [math.log(a / b) for a, b in zip(num, den) if a > 0 and b > 0]
    if not logs:
        return None, None, None
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), None, None
    t = _T95[len(logs) - 2] if len(logs) - 2 < len(_T95) else 1.96
    half = t * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def describe(num, den, target=None):
    """One line: 'paired 0.97x, 95% CI 0.90-1.05 (n=5): ...' with what the
    interval says about target (a ratio the numerator must reach)."""
    g, lo, hi = paired(num, den)
    if g is None:
        return "paired: no data"
    if lo is None:
        return "paired %.2fx (n=1: no interval)" % g
    text = "paired %.2fx, 95%% CI %.2f-%.2f (n=%d)" % (g, lo, hi, min(len(num), len(den)))
    if target is not None:
        if lo >= target:
            text += ": above %.2f" % target
        elif hi < target:
            text += ": below %.2f" % target
        else:
            text += ": %.2f within the interval" % target
    return text
