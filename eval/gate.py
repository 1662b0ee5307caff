"""The regression gate: measured figures against committed baselines, within a margin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def regressions(
    measured: Mapping[str, float | None],
    baseline: Mapping[str, float | None],
    gated: Sequence[str],
    margin: float,
) -> list[str]:
    """One message per gated figure that fell more than `margin` below its baseline.

    A baseline of None (a figure the baseline run could not measure) gates nothing; a figure that
    had a baseline and is no longer measured is a regression.
    """
    failures = []
    for name in gated:
        expected, actual = baseline.get(name), measured.get(name)
        if expected is None:
            continue
        if actual is None:
            failures.append(f"{name} is no longer measured (baseline {expected:.3f})")
        elif actual < expected - margin:
            failures.append(
                f"{name} fell to {actual:.3f}, more than {margin} below its baseline {expected:.3f}"
            )
    return failures
