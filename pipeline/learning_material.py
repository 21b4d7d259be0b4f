"""The learning step's material: the accepted learning pictures of a corrections store, as the CNN
sees them, and which of them are held out for the gate (pipeline.learn, pipeline.gate).

    material = read_material("state/corrections.sqlite", class_names, preprocessing)
    is_held_out(picture_hash, 0.2)       # the same answer for a picture in every step
"""

from dataclasses import dataclass

import numpy as np

LEARNING_FILE = "learning.json"  # beside a version the learning step wrote: what it learnt from


@dataclass
class Material:
    """Learning pictures as the CNN sees them."""
    x: np.ndarray  # uint8, the model's input size
    y: np.ndarray  # class indices
    hashes: tuple
    sources: tuple

    def subset(self, keep):
        keep = np.asarray(keep, bool)
        return Material(self.x[keep], self.y[keep], tuple(np.asarray(self.hashes)[keep]), tuple(np.asarray(self.sources)[keep]))

    def counts(self, class_names):
        return {source: {name: int(np.sum((np.asarray(self.sources) == source) & (self.y == index)))
                         for index, name in enumerate(class_names)} for source in sorted(set(self.sources))}


def is_held_out(picture_hash, fraction):
    """Whether a learning picture is the gate's: a fixed share of hashes, whatever else is in the queue."""
    return int(str(picture_hash)[:8], 16) / 16 ** 8 < fraction


def crop_views(source, preprocessing, count, rng, min_area=0.5):
    """(1 + count, h, w, c) uint8: the whole picture and `count` random crops of it (at least
    min_area of it, aspect 3:4 to 4:3), each resized as the model's input."""
    from bundle.images import open_image, to_mode, to_uint8

    image = to_mode(open_image(source), preprocessing.channels)
    width, height = image.size
    views = [to_uint8(image, preprocessing)]
    for _ in range(count):
        area = rng.uniform(min_area, 1.0) * width * height
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = int(min(width, round(np.sqrt(area * aspect))))
        h = int(min(height, round(np.sqrt(area / aspect))))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        views.append(to_uint8(image.crop((left, top, left + w, top + h)), preprocessing))
    return np.stack(views)


def read_material(store_target, class_names, preprocessing, limit=None, crops=0, seed=0):
    """The accepted learning pictures of a corrections store (a SQLite file or a PostgreSQL URL)."""
    from bundle.images import to_uint8
    from service.corrections import CorrectionStore

    store = CorrectionStore(store_target, class_names)
    try:
        rows = store.learning_pictures()[:limit] if limit else store.learning_pictures()
        rng = np.random.default_rng(seed)
        x = [crop_views(store.picture(picture), preprocessing, crops, rng) if crops else to_uint8(store.picture(picture), preprocessing)
             for picture, _, _ in rows]
    finally:
        store.close()
    shape = (0, preprocessing.height, preprocessing.width, preprocessing.channels)
    return Material(np.stack(x) if x else np.zeros(shape, np.uint8),
                    np.array([class_names.index(label) for _, label, _ in rows], np.int64),
                    tuple(row[0] for row in rows), tuple(row[2] for row in rows))
