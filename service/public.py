"""What the public page (and the JSON API) do for an anonymous visitor, without Gradio.

    service = PublicService(predictor, CorrectionStore(...), ClientLimits(30), UploadMemory(), Pseudonyms(state))
    result = service.classify(path, client="203.0.113.9", session="abc")   # Prediction + token for the session
    service.correct_by_gallery(result.token, 2, client, session)         # "Based on the image you selected, ..."
    service.correct_by_name(result.token, "ship", client, session)

A visitor's session holds only the token: the server keeps the correction copy of the upload
(service.visitors.UploadMemory), never the decoded upload. Each visitor is limited per minute
(service.limits); every refusal is a plain sentence (VisitorError).
"""

import hashlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bundle.atomic import write_bytes_atomic
from bundle.images import ImageError, to_mode
from monitoring.log import LogError
from service.answer import relabel_message
from service.corrections import CorrectionError, CorrectionStoreError
from service.limits import LimitExceeded

LOGGER = logging.getLogger(__name__)

DEFAULT_THUMBNAILS_DIR = Path(tempfile.gettempdir()) / "honest-classifier-gallery"
CORRECTION_SIDE = 512  # long side of the copy a correction stores (training reads it at 32 px)


class VisitorError(ValueError):
    """Something a visitor asked that the app will not do; the message is written for them."""


@dataclass
class Classified:
    prediction: object  # service.predictor.Prediction
    token: str | None  # what the visitor's session keeps, to correct this upload


class PublicService:
    def __init__(self, predictor, corrections=None, limits=None, memory=None, pseudonyms=None, thumbnails_dir=None):
        from service.limits import ClientLimits
        from service.visitors import UploadMemory

        self.predictor = predictor
        # Content-named files, each written once and atomically: one folder can serve any bundle
        # and any number of processes. Nothing is created until a picture is shown.
        self.thumbnails_dir = Path(thumbnails_dir) if thumbnails_dir is not None else DEFAULT_THUMBNAILS_DIR
        self.corrections = corrections
        self.limits = ClientLimits(0) if limits is None else limits
        # `is None`, not `or`: an empty UploadMemory has len 0 and would be swapped for a default.
        self.memory = UploadMemory() if memory is None else memory
        self.pseudonyms = pseudonyms

    @property
    def class_names(self):
        return self.predictor.class_names

    def classify(self, source, client="local", session=""):
        """Classify one upload (ImageError for a bad file, VisitorError over a limit)."""
        try:
            with self.limits.upload(client):
                prediction = self.predictor.predict(source)
        except LimitExceeded as error:
            raise VisitorError(str(error)) from None
        png = correction_png(prediction.image)
        token = self.memory.keep(png, prediction.picture_hash, prediction.label, prediction.answered_by,
                                 [n.class_name for n in prediction.gallery], prediction.log_id)
        self._learn_from_fallback(prediction, png)
        prediction.image = None  # the decoded upload goes no further than this call
        return Classified(prediction, token)

    def _learn_from_fallback(self, prediction, png):
        """An upload the ImageNet fallback answered surely joins the review queue, labelled by it
        (whether it did is the answering bundle's rule: Prediction.teaches)."""
        if self.corrections is None or not prediction.teaches:
            return
        try:
            self.corrections.teach(png, prediction.picture_hash, prediction.label, prediction.confidence)
        except CorrectionStoreError as error:  # the visitor still gets the answer
            LOGGER.warning("%s", error)

    def correct_by_gallery(self, token, index, client="local", session=""):
        """The visitor clicked gallery picture `index` (0-based, as shown) of the upload behind `token`."""
        kept = self._kept(token)
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise VisitorError("That gallery picture does not exist.")
        if not 0 <= int(index) < len(kept.gallery_classes):
            raise VisitorError("That gallery picture does not exist.")
        return self._vote(kept, kept.gallery_classes[int(index)], client, session)

    def correct_by_name(self, token, label, client="local", session=""):
        kept = self._kept(token)
        if not isinstance(label, str) or not label:
            raise VisitorError("Choose a class first.")
        name = label.replace(" ", "_")
        if name not in self.class_names:
            raise VisitorError(f"{label!r} is not one of our classes.")
        return self._vote(kept, name, client, session)

    def thumbnail_file(self, neighbour):
        """A gallery picture as a PNG file named by its content, written once and atomically.
        Gradio copies a file into its cache atomically, but writes a picture given as an array
        over the same cache file on every response: two visitors shown the same training
        picture at once could be sent a half-written file."""
        image = neighbour.thumbnail[:, :, 0] if neighbour.thumbnail.shape[-1] == 1 else neighbour.thumbnail
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        data = buffer.getvalue()
        path = self.thumbnails_dir / f"{hashlib.sha256(data).hexdigest()[:24]}.png"
        if not path.exists():
            write_bytes_atomic(path, data)
        return str(path)

    def _kept(self, token):
        kept = self.memory.get(token)
        if kept is None:
            raise VisitorError("Classify a picture first (an upload is kept for corrections for an hour).")
        return kept

    def _vote(self, kept, label, client, session):
        if self.corrections is None or self.pseudonyms is None:
            raise VisitorError("Corrections are not being collected here.")
        try:
            self.limits.correction(client)
        except LimitExceeded as error:
            raise VisitorError(str(error)) from None
        try:
            self.corrections.vote(kept.png, kept.picture_hash, label, kept.answer, kept.answered_by,
                                  self.pseudonyms.voter(client), str(session)[:64])
        except CorrectionStoreError as error:
            # Where the database is and what it said are for the operator, not for a stranger.
            LOGGER.warning("%s", error)
            raise VisitorError("Your label could not be saved just now; please try again in a minute.") from None
        except CorrectionError as error:
            raise VisitorError(str(error)) from None
        log = self.predictor.log
        if log is not None and kept.log_id is not None:
            try:
                log.tag(kept.log_id, label)
            except LogError as error:  # the vote is saved; only the monitoring tag is missing
                LOGGER.warning("%s", error)
        return relabel_message(label)


def correction_png(image):
    """The PNG a correction stores: RGB, long side capped at CORRECTION_SIDE."""
    picture = to_mode(image, 3)
    if max(picture.size) > CORRECTION_SIDE:
        picture = picture.copy()
        picture.thumbnail((CORRECTION_SIDE, CORRECTION_SIDE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    # Level 1: half the encoding time of the default for ~5% more bytes; the visitor is waiting.
    picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


__all__ = ["Classified", "ImageError", "PublicService", "VisitorError", "correction_png"]
