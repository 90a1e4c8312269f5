"""The benchmarks' own arithmetic (the benchmarks themselves run outside make test: benchmarks/)."""

from __future__ import annotations

import numpy as np

from benchmarks.serving import ratio_interval


def test_the_ratio_interval_resamples_whole_rounds():
    rng = np.random.default_rng(1)
    load = rng.uniform(1.0, 2.0, 20)  # each round's load of the machine, on both servers alike
    base = [list(level * rng.uniform(0.9, 1.1, 50)) for level in load]
    ours = [list(1.2 * level * rng.uniform(0.9, 1.1, 50)) for level in load]
    low, high = ratio_interval(ours, base)
    assert low < 1.2 < high and high - low < 0.1
    # A server exactly 1.5x the other in every round: every resample says 1.5.
    assert ratio_interval([[1.5 * x for x in r] for r in base], base) == (1.5, 1.5)
    # A round keeps both servers' slices: paired with other rounds' load, the interval is wider.
    unpaired_low, unpaired_high = ratio_interval(ours, [base[i] for i in rng.permutation(len(base))])
    assert unpaired_high - unpaired_low > 2 * (high - low)


def test_a_latency_target_is_judged_on_the_whole_interval():
    from benchmarks.serving import latency_target

    assert latency_target(1.05, (1.02, 1.08), 1.1)["verdict"] == "met"
    judged = latency_target(1.097, (1.063, 1.119), 1.1)  # under the target, but not all of its interval
    assert (judged["verdict"], judged["met"]) == ("undecided", False)
    assert latency_target(1.16, (1.103, 1.225), 1.1)["verdict"] == "missed"
