"""web.queue_turns: each client's places in Gradio's shared queue."""

from web.queue_turns import QueueTurns


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_client_holds_at_most_cap_places_and_others_are_not_affected():
    turns = QueueTurns(cap=2, cooldown_s=0)
    first, second = turns.take("flooder", "s1"), turns.take("flooder", "s2")
    assert first and second and first != second
    assert turns.take("flooder", "s3") is None
    assert turns.take("neighbour", "s4") is not None
    assert turns.held("flooder") == 2 and turns.held("neighbour") == 1


def test_a_finished_event_frees_its_place():
    turns = QueueTurns(cap=1, cooldown_s=0)
    key = turns.take("a", "s1")
    turns.bind("a", key, "event-1")
    assert turns.take("a", "s1") is None
    turns.finished("event-1")
    assert turns.held("a") == 0 and turns.take("a", "s1") is not None


def test_a_refused_join_gives_its_place_back():
    turns = QueueTurns(cap=1)
    turns.give_back("a", turns.take("a", "s1"))
    assert turns.held("a") == 0


def test_a_closed_stream_frees_the_places_of_its_session_only():
    turns = QueueTurns(cap=3)
    for event_id, session in (("e1", "s1"), ("e2", "s1"), ("e3", "s2")):
        turns.bind("a", turns.take("a", session), event_id)
    turns.session_ended("s1")
    assert turns.held("a") == 1
    turns.finished("e3")
    assert turns.held("a") == 0


def test_a_place_whose_end_is_never_seen_expires():
    clock = Clock()
    turns = QueueTurns(cap=1, expiry_s=60, cooldown_s=0, clock=clock)
    turns.bind("a", turns.take("a", "s1"), "e1")
    clock.now = 59
    assert turns.take("a", "s1") is None
    clock.now = 61
    assert turns.take("a", "s1") is not None
    turns.finished("e1")  # the expired event's late end frees nothing twice
    assert turns.held("a") == 1


def test_a_client_refused_a_place_waits_out_a_cool_down_that_each_refusal_restarts():
    clock = Clock()
    turns = QueueTurns(cap=1, cooldown_s=10, clock=clock)
    turns.bind("flooder", turns.take("flooder", "s1"), "e1")
    assert turns.take("flooder", "s2") is None  # over the cap: the cool-down starts
    turns.finished("e1")
    clock.now = 9
    assert turns.take("flooder", "s3") is None  # its place is free, but it is still cooling down
    clock.now = 18
    assert turns.take("flooder", "s3") is None  # the refusal at 9 s restarted the wait (to 19 s)...
    clock.now = 28.5  # ...and this one at 18 s, to 28 s
    assert turns.take("flooder", "s3") is not None
    assert turns.take("patient", "s9") is not None  # nobody else waits for the flooder


def test_an_event_that_ends_before_its_join_is_bound_frees_its_place():
    turns = QueueTurns(cap=1, cooldown_s=0)
    key = turns.take("a", "s1")
    turns.finished("e1")  # its end went out on the session's open stream first
    turns.bind("a", key, "e1")
    assert turns.held("a") == 0 and turns.take("a", "s1") is not None


def test_refused_clients_leave_nothing_behind():
    turns = QueueTurns(cap=0, cooldown_s=0)
    for index in range(100):
        assert turns.take(f"client-{index}", "s") is None
    assert not turns._held
