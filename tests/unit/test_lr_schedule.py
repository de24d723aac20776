"""The learning-rate schedule of the training loop (pure Python; the loop applies it)."""

import pytest

from trainers.loop import cosine_factor


def test_cosine_decay_starts_at_one_and_ends_at_the_final_fraction():
    assert cosine_factor(0.0, 0.1) == pytest.approx(1.0)
    assert cosine_factor(0.5, 0.1) == pytest.approx(0.55)
    assert cosine_factor(1.0, 0.1) == pytest.approx(0.1)


def test_cosine_decay_only_falls_and_stays_put_outside_the_run():
    factors = [cosine_factor(i / 20, 0.2) for i in range(21)]
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))
    assert cosine_factor(-0.5, 0.2) == pytest.approx(1.0)
    assert cosine_factor(3.0, 0.2) == pytest.approx(0.2)


def test_no_decay_is_a_constant_rate():
    assert {cosine_factor(p / 10, 1.0) for p in range(11)} == {1.0}
