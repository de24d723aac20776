"""Continuous-batching scheduler: admission, retirement, fairness, cancellation (no Ray)."""

import time

import pytest

from sampling import QueueFull, Scheduler, Sequence


def seq(length: int = 3, prompt=(1,)) -> Sequence:
    return Sequence(prompt_ids=list(prompt), max_length=length)


def run_to_completion(scheduler: Scheduler, max_steps: int = 1000) -> list[int]:
    """Drive the scheduler like the engine does; returns the request ids in finishing order."""
    finished, fed = [], {}
    for _ in range(max_steps):
        running, _, _ = scheduler.schedule()
        if not running and not scheduler.waiting:
            return finished
        for s in running:
            fed[s] = min(fed.get(s, 0) + 1, len(s.prompt_ids))
            if fed[s] >= len(s.prompt_ids):
                s.generated += 1
                if s.generated >= s.max_length:
                    scheduler.retire(s)
                    finished.append(s.request_id)
    raise AssertionError("requests starved")


def test_admission_happens_only_at_step_boundaries():
    scheduler = Scheduler(max_batch=4, max_waiting=10)
    a = seq()
    scheduler.add(a)
    assert a.slot is None and scheduler.running == []  # queued, not running yet
    running, admitted, _ = scheduler.schedule()
    assert running == [a] and admitted == [a] and a.slot == 0


def test_a_finished_sequence_frees_its_slot_for_the_next_step():
    scheduler = Scheduler(max_batch=1, max_waiting=10)
    first, second = seq(), seq()
    scheduler.add(first)
    scheduler.add(second)
    assert scheduler.schedule()[0] == [first]
    scheduler.retire(first)
    running, admitted, _ = scheduler.schedule()
    assert running == [second] and admitted == [second] and second.slot == first.slot


def test_mixed_lengths_all_finish_fifo_and_short_ones_are_not_held_back():
    scheduler = Scheduler(max_batch=2, max_waiting=20)
    lengths = [50, 2, 30, 1, 5, 40, 3, 1, 2, 10]
    sequences = [seq(n) for n in lengths]
    for s in sequences:
        scheduler.add(s)
    order = run_to_completion(scheduler)
    assert sorted(order) == sorted(s.request_id for s in sequences)  # nobody starves
    # The 2-char request behind the 50-char one finishes long before it (no head-of-line block).
    assert order.index(sequences[1].request_id) < order.index(sequences[0].request_id)


def test_admission_order_is_first_come_first_served():
    scheduler = Scheduler(max_batch=1, max_waiting=20)
    sequences = [seq(1) for _ in range(5)]
    for s in sequences:
        scheduler.add(s)
    assert run_to_completion(scheduler) == [s.request_id for s in sequences]


def test_cancellation_of_running_and_waiting_sequences():
    scheduler = Scheduler(max_batch=1, max_waiting=10)
    running, waiting = seq(100), seq(100)
    scheduler.add(running)
    scheduler.add(waiting)
    scheduler.schedule()
    running.cancelled, waiting.cancelled = True, True
    active, _, dropped = scheduler.schedule()
    assert active == [] and set(dropped) == {running, waiting}
    assert scheduler.free_slots == [0] and not scheduler.waiting


def test_expired_deadline_retires_the_sequence():
    scheduler = Scheduler(max_batch=2, max_waiting=10)
    late = seq(100)
    late.deadline = time.monotonic() - 1
    scheduler.add(late)
    assert scheduler.schedule()[2] == [late] and late.done


def test_waiting_queue_is_bounded():
    scheduler = Scheduler(max_batch=1, max_waiting=2)
    scheduler.add(seq())
    scheduler.add(seq())
    with pytest.raises(QueueFull):
        scheduler.add(seq())
