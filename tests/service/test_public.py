"""What the public page does for anonymous visitors (service.public), on the real predictor: a
session keeps only a token, corrections are votes, every refusal is a plain sentence."""

import io
import sqlite3
import stat

import pytest
from PIL import Image

from monitoring import PredictionLog
from service.answer import relabel_message
from service.bundle import Bundle
from service.corrections import CorrectionStore
from service.limits import ClientLimits
from service.predictor import Predictor
from service.public import CORRECTION_SIDE, PublicService, VisitorError
from service.visitors import SALT_FILE, Pseudonyms, UploadMemory
from tests.postgres_server import postgres_server  # noqa: F401  (fixture: a throwaway PostgreSQL)
from tests.bad_inputs import encode
from tests.conftest import REPO

ALICE, BOB = "203.0.113.9", "198.51.100.23"


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(REPO / "assets")


def public(bundle, folder, limits=None, memory=None):
    """The service as app.py wires it, with its state in `folder`."""
    predictor = Predictor(bundle, log=PredictionLog(folder / "monitoring.sqlite"))
    store = CorrectionStore(folder / "corrections.sqlite", bundle.class_names)
    memory = UploadMemory() if memory is None else memory
    return PublicService(predictor, store, limits or ClientLimits(0), memory, Pseudonyms(folder))


@pytest.fixture()
def service(bundle, tmp_path):
    return public(bundle, tmp_path)


@pytest.fixture(scope="module")
def ship(example_photos):
    return example_photos["container_ship"]


def test_a_session_token_allows_a_correction(service, ship, tmp_path):
    result = service.classify(ship, client=ALICE, session="session-1")
    prediction = result.prediction
    assert isinstance(result.token, str) and len(result.token) >= 16
    chosen = prediction.gallery[2].class_name
    assert service.correct_by_gallery(result.token, 2, ALICE, "session-1") == relabel_message(chosen)
    [vote] = service.corrections.votes(source="visitor")
    assert (vote.label, vote.status) == (chosen, "pending")
    assert (vote.answer, vote.answered_by) == (prediction.label, prediction.answered_by)
    assert vote.picture == prediction.picture_hash and vote.session == "session-1"
    # The voter is a salted hash of the address, never the address itself.
    assert vote.voter == Pseudonyms(tmp_path).voter(ALICE) and ALICE not in vote.voter
    picture = Image.open(io.BytesIO(service.corrections.picture(vote.picture)))
    assert picture.format == "PNG" and picture.mode == "RGB" and picture.size == Image.open(ship).size
    with sqlite3.connect(tmp_path / "monitoring.sqlite") as database:
        assert database.execute("SELECT tag FROM predictions WHERE id = ?", (prediction.log_id,)).fetchone()[0] == chosen


def test_a_correction_by_name_takes_the_label_as_the_page_shows_it(service, ship):
    token = service.classify(ship, client=ALICE).token
    message = service.correct_by_name(token, "large omnivores and herbivores", ALICE)
    assert message == relabel_message("large_omnivores_and_herbivores")
    assert [v.label for v in service.corrections.votes(source="visitor")] == ["large_omnivores_and_herbivores"]


@pytest.mark.parametrize("token", [None, "", "made-up-token", 7])
def test_a_correction_needs_a_token_the_server_gave(service, token):
    with pytest.raises(VisitorError, match="Classify a picture first"):
        service.correct_by_gallery(token, 0, ALICE)
    assert service.corrections.votes(source="visitor") == []


def test_the_decoded_upload_is_not_kept(service, example_photos):
    photo = Image.open(example_photos["pug"]).convert("RGB")
    huge = encode(photo.resize((4000, 3000)), "JPEG", quality=70)
    result = service.classify(huge, client=ALICE)
    assert result.prediction.image is None
    # What the server keeps is the correction copy: a PNG with its long side capped.
    kept = service.memory.get(result.token)
    copy = Image.open(io.BytesIO(kept.png))
    assert copy.format == "PNG" and max(copy.size) == CORRECTION_SIDE and copy.size == (CORRECTION_SIDE, 384)
    assert kept.picture_hash == result.prediction.picture_hash
    assert list(kept.gallery_classes) == [n.class_name for n in result.prediction.gallery]


def test_the_same_voter_cannot_vote_twice_on_one_picture(service, ship):
    first = service.classify(ship, client=ALICE).token
    service.correct_by_gallery(first, 1, ALICE)
    with pytest.raises(VisitorError, match="already sent a correction for this picture"):
        service.correct_by_name(first, "truck", ALICE)
    # Uploading the same file again (a new token, another session) does not give a second vote.
    again = service.classify(ship, client=ALICE, session="another-tab").token
    assert again != first
    with pytest.raises(VisitorError, match="already sent a correction for this picture"):
        service.correct_by_gallery(again, 3, ALICE, "another-tab")
    assert len(service.corrections.votes(source="visitor")) == 1


def test_two_visitors_votes_on_one_picture_stay_side_by_side(service, ship):
    alice = service.classify(ship, client=ALICE)
    bob = service.classify(ship, client=BOB)
    service.correct_by_gallery(alice.token, 1, ALICE)
    service.correct_by_name(bob.token, "truck", BOB)
    votes = service.corrections.votes(picture=alice.prediction.picture_hash, source="visitor")
    assert [v.label for v in votes] == [alice.prediction.gallery[1].class_name, "truck"]
    assert all(v.status == "pending" for v in votes) and votes[0].voter != votes[1].voter
    assert service.corrections.counts("visitor")["pending"] == 2


@pytest.mark.parametrize("index", [-1, "len", 1.5, True, "2", None])
def test_invalid_gallery_indices_are_refused(service, ship, index):
    result = service.classify(ship, client=ALICE)
    if index == "len":
        index = len(result.prediction.gallery)
    with pytest.raises(VisitorError, match="That gallery picture does not exist"):
        service.correct_by_gallery(result.token, index, ALICE)
    assert service.corrections.votes(source="visitor") == []


@pytest.mark.parametrize("label, message", [
    ("../../etc", "not one of our classes"), ("Ship", "not one of our classes"), ("", "Choose a class first"),
    (None, "Choose a class first"), (3, "Choose a class first"),
])
def test_unknown_labels_are_refused(service, ship, label, message):
    token = service.classify(ship, client=ALICE).token
    with pytest.raises(VisitorError, match=message):
        service.correct_by_name(token, label, ALICE)
    assert service.corrections.votes(source="visitor") == []


def test_too_many_uploads_get_a_plain_message(bundle, ship, tmp_path):
    now = [0.0]
    limits = ClientLimits(uploads_per_minute=2, clock=lambda: now[0])
    service = public(bundle, tmp_path, limits=limits)
    service.classify(ship, client=ALICE)
    service.classify(ship, client=ALICE)
    with pytest.raises(VisitorError) as refused:
        service.classify(ship, client=ALICE)
    assert str(refused.value) == "Too many pictures from you in the last minute (the limit is 2); try again in 61 s."
    assert service.classify(ship, client=BOB).token, "another visitor is not held up"
    now[0] = 60.0  # the window has passed
    assert service.classify(ship, client=ALICE).token
    assert service.predictor.log.count() == 4, "a refused upload is not classified"


def test_too_many_corrections_get_a_plain_message(bundle, example_photos, tmp_path):
    service = public(bundle, tmp_path, limits=ClientLimits(uploads_per_minute=10, corrections_per_minute=1))
    tokens = [service.classify(example_photos[name], client=ALICE).token for name in ("pug", "airliner")]
    service.correct_by_gallery(tokens[0], 1, ALICE)
    with pytest.raises(VisitorError, match=r"^Too many corrections from you in the last minute \(the limit is 1\)"):
        service.correct_by_gallery(tokens[1], 1, ALICE)
    assert len(service.corrections.votes(source="visitor")) == 1


def test_one_visitor_cannot_hold_every_place_in_the_queue(bundle, ship, tmp_path):
    limits = ClientLimits(uploads_per_minute=10, in_flight=1)
    service = public(bundle, tmp_path, limits=limits)
    with limits.upload(ALICE):  # one of Alice's pictures is being classified
        with pytest.raises(VisitorError, match="You already have 1 pictures being classified"):
            service.classify(ship, client=ALICE)
        assert service.classify(ship, client=BOB).token
    assert service.classify(ship, client=ALICE).token


def test_kept_uploads_expire_after_their_ttl(bundle, ship, tmp_path):
    now = [0.0]
    memory = UploadMemory(ttl_s=3600, clock=lambda: now[0])
    service = public(bundle, tmp_path, memory=memory)
    token = service.classify(ship, client=ALICE).token
    now[0] = 3599.0
    assert memory.get(token) is not None
    now[0] = 3600.0
    assert memory.get(token) is None and len(memory) == 0 and memory.size_bytes == 0
    with pytest.raises(VisitorError, match="Classify a picture first"):
        service.correct_by_gallery(token, 0, ALICE)


def test_kept_uploads_are_capped_in_bytes_oldest_first():
    memory = UploadMemory(max_bytes=25)
    first, second = memory.keep(b"a" * 10, "h1", "ship", "fallback", ["ship"]), memory.keep(b"b" * 10, "h2", None, "refused", [])
    assert memory.size_bytes == 20 and memory.get(first).picture_hash == "h1"
    third = memory.keep(b"c" * 10, "h3", "cat", "cnn", ["cat"])
    assert memory.get(first) is None and memory.get(second).png == b"b" * 10 and memory.get(third).answer == "cat"
    assert memory.size_bytes == 20 and len(memory) == 2
    # One upload larger than the whole cap is not kept at all.
    assert memory.get(memory.keep(b"d" * 30, "h4", None, "refused", [])) is None
    assert memory.size_bytes == 0 and len(memory) == 0


def test_the_byte_cap_holds_for_real_uploads(bundle, example_photos, tmp_path):
    photos = [example_photos["pug"], example_photos["airliner"]]
    # The size of each correction copy, measured with no cap.
    measuring = public(bundle, tmp_path / "measure")
    sizes = [len(measuring.memory.get(measuring.classify(photo).token).png) for photo in photos]
    # Room for either copy alone, not for both: the second upload pushes the first out.
    memory = UploadMemory(max_bytes=max(sizes))
    service = public(bundle, tmp_path / "capped", memory=memory)
    first, second = (service.classify(photo, client=ALICE).token for photo in photos)
    assert memory.get(first) is None and memory.get(second) is not None
    assert memory.size_bytes == sizes[1] <= max(sizes) and len(memory) == 1


def test_pseudonyms_are_stable_per_state_folder(tmp_path):
    one, other = tmp_path / "one", tmp_path / "other"
    assert Pseudonyms(one).voter(ALICE) == Pseudonyms(one).voter(ALICE), "stable across restarts"
    assert Pseudonyms(one).voter(ALICE) != Pseudonyms(other).voter(ALICE), "each deployment has its own salt"
    assert Pseudonyms(one).voter(ALICE) != Pseudonyms(one).voter(BOB)
    assert stat.S_IMODE((one / SALT_FILE).stat().st_mode) == 0o600


def test_replicas_on_one_database_share_the_salt(tmp_path, postgres_server):
    database, other_database = postgres_server.new_database(), postgres_server.new_database()
    first, second = Pseudonyms(tmp_path / "one", database=database), Pseudonyms(tmp_path / "two", database=database)
    assert first.voter(ALICE) == second.voter(ALICE), "one visitor is one voter on every replica"
    assert first.voter(ALICE) != Pseudonyms(tmp_path / "one", database=other_database).voter(ALICE)
    assert not (tmp_path / "one" / SALT_FILE).exists(), "the salt lives in the database, not in a file"


def test_a_broken_store_gets_a_plain_message_that_names_no_database(service, ship, tmp_path, caplog):
    result = service.classify(ship, client=ALICE, session="session-1")
    service.corrections.close()
    for name in ("corrections.sqlite", "corrections.sqlite-wal", "corrections.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "corrections.sqlite").write_bytes(b"not a database at all " * 512)
    with pytest.raises(VisitorError) as refused:
        service.correct_by_name(result.token, "ship", ALICE, "session-1")
    assert "try again" in str(refused.value) and "sqlite" not in str(refused.value)
    assert "corrections.sqlite" in caplog.text, "the operator's log says which store failed"


def test_the_fallbacks_sure_answer_joins_the_queue_once_labelled_by_it(service, ship):
    rule = service.predictor.bundle.answer_rule
    result = service.classify(ship, client=ALICE)
    prediction = result.prediction
    assert prediction.answered_by == "fallback" and prediction.confidence >= rule.teach_mass_threshold < 1.0
    service.classify(ship, client=BOB)  # the same picture again: kept once
    [taught] = service.corrections.votes(source="fallback")
    assert (taught.picture, taught.label, taught.status) == (prediction.picture_hash, prediction.label, "pending")
    assert service.corrections.picture(taught.picture)  # the picture itself, for the reviewer
