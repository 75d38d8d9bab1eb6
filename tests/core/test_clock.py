from hypothesis import given
from hypothesis import strategies as st

from core.clock import HybridClock, hlc_ms, pack


class FakeWall:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@given(st.lists(st.integers(min_value=-5_000, max_value=5_000), max_size=200))
def test_timestamps_strictly_increase_whatever_the_wall_clock_does(jumps):
    wall = FakeWall(1_000_000)
    clock = HybridClock(wall)
    last = clock.now()
    for jump in jumps:
        wall.ms = max(0, wall.ms + jump)
        now = clock.now()
        assert now > last
        last = now


def test_restart_continues_after_the_persisted_timestamp():
    wall = FakeWall(5_000)
    before = HybridClock(wall).now()
    wall.ms = 1_000  # the wall clock went backwards across the restart
    after = HybridClock(wall, last=before).now()
    assert after > before


def test_remote_timestamp_far_ahead_does_not_drag_the_clock():
    wall = FakeWall(10_000)
    clock = HybridClock(wall, max_offset_ms=1_000)
    clock.now()
    assert clock.observe(pack(10_000 + 5_000, 0)) is False
    assert hlc_ms(clock.now()) == 10_000


def test_remote_timestamp_within_bounds_is_merged():
    wall = FakeWall(10_000)
    clock = HybridClock(wall, max_offset_ms=1_000)
    remote = pack(10_500, 7)
    assert clock.observe(remote) is True
    assert clock.now() > remote


def test_counter_overflow_borrows_the_next_millisecond():
    clock = HybridClock(FakeWall(100), last=pack(100, 0xFFFF))
    assert clock.now() == pack(101, 0)
