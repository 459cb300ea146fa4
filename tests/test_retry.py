"""The retry policy shared by Collection.run and the tenant operations."""
import random

import pytest

from multidb.retry import AttemptWithBackoff


def _makeOne(attempts=4, **kw):
    slept = []
    kw.setdefault('rng', random.Random(42))
    return AttemptWithBackoff(attempts, sleep=slept.append, **kw), slept


def test_attempts_numbered_and_last():
    policy, slept = _makeOne(3)
    seen = []
    for attempt in policy:
        seen.append((attempt, policy.last))
    assert seen == [(1, False), (2, False), (3, True)]
    assert len(slept) == 2


def test_no_sleep_before_first_attempt_nor_after_success():
    policy, slept = _makeOne(5)
    for attempt in policy:
        break
    assert slept == []


def test_delays_grow_exponentially_up_to_maximum_with_jitter():
    policy, slept = _makeOne(6, initial=0.1, maximum=0.5, jitter=0.5)
    list(policy)
    caps = [0.1, 0.2, 0.4, 0.5, 0.5]
    assert len(slept) == len(caps)
    for got, cap in zip(slept, caps):
        assert cap / 2 <= got <= cap
    # Jitter: not all delays sit on the cap.
    assert any(got < cap for got, cap in zip(slept, caps))


def test_no_jitter_gives_exact_delays():
    policy, slept = _makeOne(4, initial=0.01, factor=3, jitter=0)
    list(policy)
    assert slept == pytest.approx([0.01, 0.03, 0.09])


@pytest.mark.parametrize('kw, match', [
    (dict(attempts=0), 'attempts'),
    (dict(attempts=1.5), 'attempts'),
    (dict(attempts=True), 'attempts'),
    (dict(attempts=2, initial=-1), 'initial'),
    (dict(attempts=2, maximum='x'), 'maximum'),
    (dict(attempts=2, factor=0.5), 'factor'),
    (dict(attempts=2, jitter=2), 'jitter'),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        AttemptWithBackoff(**kw)
