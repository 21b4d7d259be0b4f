"""web.places: each client's places at the front door."""

from web.places import Places


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_client_holds_at_most_cap_places_and_others_are_not_affected():
    places = Places(cap=2, cooldown_s=0)
    first, second = places.take("flooder"), places.take("flooder")
    assert first and second and first != second
    assert places.take("flooder") is None
    assert places.take("neighbour") is not None
    assert places.held("flooder") == 2 and places.held("neighbour") == 1


def test_a_finished_event_frees_its_place():
    places = Places(cap=1, cooldown_s=0)
    key = places.take("a")
    places.bind("a", key, "event-1", "s1")
    assert places.take("a") is None
    places.finished("event-1")
    assert places.held("a") == 0 and places.take("a") is not None


def test_a_refused_join_gives_its_place_back():
    places = Places(cap=1)
    places.give_back("a", places.take("a"))
    assert places.held("a") == 0


def test_a_closed_stream_frees_the_places_of_its_session_only():
    places = Places(cap=3)
    for event_id, session in (("e1", "s1"), ("e2", "s1"), ("e3", "s2")):
        places.bind("a", places.take("a"), event_id, session)
    places.session_ended("s1")
    assert places.held("a") == 1
    places.finished("e3")
    assert places.held("a") == 0


def test_a_place_whose_end_is_never_seen_expires():
    clock = Clock()
    places = Places(cap=1, expiry_s=60, cooldown_s=0, clock=clock)
    places.bind("a", places.take("a"), "e1", "s1")
    clock.now = 59
    assert places.take("a") is None
    clock.now = 61
    assert places.take("a") is not None
    places.finished("e1")  # the expired event's late end frees nothing twice
    assert places.held("a") == 1


def test_a_client_refused_a_place_waits_out_a_cool_down_that_each_refusal_restarts():
    clock = Clock()
    places = Places(cap=1, cooldown_s=10, clock=clock)
    places.bind("flooder", places.take("flooder"), "e1", "s1")
    assert places.take("flooder") is None  # over the cap: the cool-down starts
    places.finished("e1")
    clock.now = 9
    assert places.take("flooder") is None  # its place is free, but it is still cooling down
    clock.now = 18
    assert places.take("flooder") is None  # the refusal at 9 s restarted the wait (to 19 s)...
    clock.now = 28.5  # ...and this one at 18 s, to 28 s
    assert places.take("flooder") is not None
    assert places.take("patient") is not None  # nobody else waits for the flooder


def test_an_event_that_ends_before_its_join_is_bound_frees_its_place():
    places = Places(cap=1, cooldown_s=0)
    key = places.take("a")
    places.finished("e1")  # its end went out on the session's open stream first
    places.bind("a", key, "e1", "s1")
    assert places.held("a") == 0 and places.take("a") is not None


def test_refused_clients_leave_nothing_behind():
    places = Places(cap=0, cooldown_s=0)
    for index in range(100):
        assert places.take(f"client-{index}") is None
    assert not places._held
