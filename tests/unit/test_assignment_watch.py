"""AssignmentWatch: when a pipeline member with no partition rejoins its group."""

from pipeline.consumer import AssignmentWatch


def test_rejoins_after_the_first_delay_then_backs_off_to_the_longest() -> None:
    watch = AssignmentWatch(first_after=20, longest=60)
    assert not watch.observe(False, 0)  # starts the clock
    assert not watch.observe(False, 19.9)
    assert watch.observe(False, 20)
    assert not watch.observe(False, 59.9)  # now waits 40 s
    assert watch.observe(False, 60)
    assert not watch.observe(False, 119.9)  # 60 s: the cap
    assert watch.observe(False, 120)
    assert not watch.observe(False, 179.9)
    assert watch.observe(False, 180)


def test_an_assignment_resets_the_clock_and_the_delay() -> None:
    watch = AssignmentWatch(first_after=20, longest=300)
    watch.observe(False, 0)
    assert watch.observe(False, 20)
    assert not watch.observe(True, 30)  # assigned: everything starts again
    assert not watch.observe(False, 100)
    assert not watch.observe(False, 119)
    assert watch.observe(False, 120)  # 20 s again, not 40


def test_an_assigned_member_never_rejoins() -> None:
    watch = AssignmentWatch(first_after=1, longest=1)
    assert not any(watch.observe(True, t) for t in range(0, 1000, 7))
