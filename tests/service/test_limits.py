"""Per-client limits, counted in memory (one process) or in a database table that replicas share
(SQLite here, and a real PostgreSQL server): the same rules on every back end."""

import threading

import pytest

from service.limits import ClientLimits, LimitExceeded, MemoryCounters, SharedCounters


class Clock:
    def __init__(self, now=6000.0):  # a window boundary: 6000 s is minute 100
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def counters(request, tmp_path):
    """make(clock) -> counters of one back end; calling it twice gives two replicas' counters."""
    if request.param == "memory":
        return lambda clock: MemoryCounters(clock=clock)
    target = str(tmp_path / "limits.sqlite") if request.param == "sqlite" else request.getfixturevalue("postgres_server").new_database()
    return lambda clock: SharedCounters(target, clock=clock)


def uploads(limits, client, count):
    """How many of `count` uploads `limits` lets through."""
    passed = 0
    for _ in range(count):
        try:
            with limits.upload(client):
                passed += 1
        except LimitExceeded:
            pass
    return passed


def test_a_client_over_its_limit_gets_a_plain_message_and_others_do_not(counters):
    clock = Clock()
    limits = ClientLimits(uploads_per_minute=3, corrections_per_minute=1, counters=counters(clock))
    assert uploads(limits, "203.0.113.1", 3) == 3
    clock.now += 20
    with pytest.raises(LimitExceeded, match=r"Too many pictures from you in the last minute \(the limit is 3\); try again in (\d+) s") as refused:
        with limits.upload("203.0.113.1"):
            pass
    wait = int(refused.value.args[0].rsplit("in ", 1)[1].split()[0])
    assert 1 <= wait <= 61
    assert uploads(limits, "203.0.113.2", 3) == 3  # another visitor has an allowance of its own
    limits.correction("203.0.113.1")
    with pytest.raises(LimitExceeded, match="Too many corrections"):
        limits.correction("203.0.113.1")
    clock.now += wait  # the message's wait is enough
    assert uploads(limits, "203.0.113.1", 1) == 1


def test_the_minute_slides_rather_than_resetting(counters):
    """A client cannot send twice its limit across a minute's boundary."""
    clock = Clock(6000.0 + 55)
    limits = ClientLimits(uploads_per_minute=4, counters=counters(clock))
    assert uploads(limits, "a", 4) == 4
    clock.now = 6000.0 + 62  # the next minute, 7 s after the four uploads
    assert uploads(limits, "a", 4) == 0
    clock.now = 6000.0 + 120 + 56  # over a minute after them
    assert uploads(limits, "a", 4) == 4


def test_nothing_is_counted_with_the_limits_off(counters):
    limits = ClientLimits(uploads_per_minute=0, counters=counters(Clock()))
    assert uploads(limits, "a", 50) == 50
    for _ in range(50):
        limits.correction("a")
        limits.upload_request("a")


def test_the_cap_on_requests_in_flight_is_per_process(counters):
    limits = ClientLimits(uploads_per_minute=100, in_flight=2, counters=counters(Clock()))
    with limits.upload("a"), limits.upload("a"):
        with pytest.raises(LimitExceeded, match="already have 2 pictures being classified"):
            with limits.upload("a"):
                pass
        assert uploads(limits, "b", 1) == 1
    assert uploads(limits, "a", 1) == 1  # places are given back


@pytest.mark.parametrize("counters", ["sqlite", "postgresql"], indirect=True)
def test_replicas_on_one_database_share_one_allowance(counters):
    clock = Clock()
    first, second = (ClientLimits(uploads_per_minute=5, counters=counters(clock)) for _ in range(2))
    assert uploads(first, "a", 3) == 3
    assert uploads(second, "a", 5) == 2
    assert uploads(first, "a", 1) == 0
    assert uploads(second, "b", 1) == 1


@pytest.mark.parametrize("counters", ["sqlite", "postgresql"], indirect=True)
def test_concurrent_replicas_admit_exactly_the_limit(counters):
    """Eight threads in each of two replicas race for one client's last places: the counting is
    one atomic step, so exactly the limit gets through."""
    clock = Clock()
    replicas = [ClientLimits(uploads_per_minute=10, corrections_per_minute=10, counters=counters(clock)) for _ in range(2)]
    admitted, lock = [], threading.Lock()

    def send(limits):
        for _ in range(3):
            try:
                limits.correction("flooder")
            except LimitExceeded:
                continue
            with lock:
                admitted.append(1)

    threads = [threading.Thread(target=send, args=(replicas[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(admitted) == 10
