"""A pixel-level gate in front of the CNN: pictures of pure noise (TV static) are refused.

    gate = NoiseGate(preprocessing).fit(training_images)   # uint8 (n, h, w, c), as the CNN sees them
    gate.is_noise(upload, model_input)                      # the decoded upload (PIL) and its pixels
    gate.save("bundle/noise_gate.json"); NoiseGate.load(path)

Why a gate and not one more part of the OOD detector: the CNN's features do not tell noise apart.
When the gate was made, uniform-noise thumbnails scored only a little low on each part of the
detector shipped then (the per-class forests with ASH-S energy and the features' length), so many
were accepted and labelled ("insects", at 16 pixels 47 times in 50), and a thumbnail never reaches
the ImageNet fallback that would refuse it. In pixels the difference
is stark: neighbouring pixels of any real picture are alike (correlation 0.34 or more over our
training pictures, median 0.88), those of noise are not (below 0.2).

The gate looks at a picture as the CNN sees it, but never enlarged: an upload smaller than the
CNN's input is judged as it came (Lanczos enlarging smooths noise into a blob), a larger one as
the model input. Below half the input's side there are too few pixels to tell noise from a
picture, and the gate leaves the picture to the CNN and the OOD detector.

The threshold is fitted, not chosen: midway between the least neighbour-correlated training
picture and the most correlated of synthetic uniform-noise uploads from half to twice the CNN's
input side, seen as above. Larger noise reaches the CNN as a faint smooth blur (Lanczos averages
it away and the preprocessing's JPEG round trip smooths what is left: correlation up to 0.8 at
1024 pixels), no longer noise in pixels; such uploads go to the ImageNet fallback, which refuses
them.
"""

import json
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from bundle.atomic import write_json_atomic
from bundle.images import Preprocessing, is_thumbnail, to_mode, to_uint8


def neighbour_correlation(images):
    """Per picture: Pearson correlation of each pixel's grey level with its right and lower
    neighbours. uint8 or float (n, h, w, c) -> (n,). A flat picture (no variance) counts as 1."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
    grey = x.mean(axis=-1)
    n = len(grey)
    first = np.concatenate([grey[:, :, :-1].reshape(n, -1), grey[:, :-1, :].reshape(n, -1)], axis=1)
    second = np.concatenate([grey[:, :, 1:].reshape(n, -1), grey[:, 1:, :].reshape(n, -1)], axis=1)
    first -= first.mean(axis=1, keepdims=True)
    second -= second.mean(axis=1, keepdims=True)
    scale = np.sqrt((first * first).sum(axis=1) * (second * second).sum(axis=1))
    return np.where(scale > 1e-9, (first * second).sum(axis=1) / np.maximum(scale, 1e-9), 1.0)


class NoiseGate(BaseEstimator):
    """Refuses pictures whose neighbouring pixels are less alike than `threshold_`.

    Fitted state: natural_min_ (the least correlated training picture), noise_max_ (the most
    correlated synthetic noise upload), threshold_ (midway between them).
    """

    # noise_scales: sides of the synthetic noise uploads in multiples of the CNN's input side; the
    # smallest is also the smallest picture the gate judges.
    def __init__(self, preprocessing=Preprocessing(), noise_scales=(0.5, 1.0, 2.0), noise_per_size=100, random_state=0):
        self.preprocessing = preprocessing
        self.noise_scales = noise_scales
        self.noise_per_size = noise_per_size
        self.random_state = random_state

    def fit(self, images, y=None):
        from PIL import Image

        rng = np.random.default_rng(self.random_state)
        noise = [self.view(Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)))
                 for side in self._noise_sides() for _ in range(self.noise_per_size)]
        self.natural_min_ = float(neighbour_correlation(images).min())
        self.noise_max_ = float(max(neighbour_correlation(view)[0] for view in noise))
        if self.noise_max_ >= self.natural_min_:
            raise ValueError(f"Some training picture is as unlike its neighbours as noise (correlation {self.natural_min_:.3f} "
                             f"vs {self.noise_max_:.3f} for noise); a noise gate would refuse it.")
        self.threshold_ = (self.natural_min_ + self.noise_max_) / 2
        return self

    def view(self, image, model_input=None):
        """What the gate judges of a decoded upload (PIL): the upload itself when it is no larger
        than the CNN's input, else the model input (made here unless given); None when the
        upload is too small to judge."""
        p = self.preprocessing
        if is_thumbnail(image, p):
            if min(image.width / p.width, image.height / p.height) < min(self.noise_scales):
                return None
            array = np.asarray(to_mode(image, p.channels), dtype=np.uint8)
            return array[:, :, None] if array.ndim == 2 else array
        return to_uint8(image, p) if model_input is None else model_input

    def judge(self, image, model_input=None):
        """The neighbour correlation of a decoded upload (PIL) as the gate sees it, or None when
        the upload is too small to judge."""
        check_is_fitted(self, "threshold_")
        view = self.view(image, model_input)
        return None if view is None else float(self.score_samples(view)[0])

    def is_noise(self, image, model_input=None):
        """True when the gate refuses this decoded upload (PIL)."""
        correlation = self.judge(image, model_input)
        return correlation is not None and correlation < self.threshold_

    def score_samples(self, images):
        """Higher is more like a picture: the neighbour correlation."""
        return neighbour_correlation(images)

    def decision_function(self, images):
        """Correlation minus the threshold: below 0 is noise."""
        check_is_fitted(self, "threshold_")
        return self.score_samples(images) - self.threshold_

    def predict(self, images):
        """+1 (a picture) or -1 (noise) for pictures already seen as the gate sees them."""
        return np.where(self.decision_function(images) >= 0, 1, -1)

    def _noise_sides(self):
        side = max(self.preprocessing.height, self.preprocessing.width)
        return [max(1, round(side * factor)) for factor in self.noise_scales]

    def to_dict(self):
        check_is_fitted(self, "threshold_")
        return {"threshold": self.threshold_, "natural_min": self.natural_min_, "noise_max": self.noise_max_,
                "noise_scales": list(self.noise_scales), "noise_per_size": self.noise_per_size,
                "random_state": self.random_state, "preprocessing": self.preprocessing.to_dict()}

    @classmethod
    def from_dict(cls, values):
        gate = cls(Preprocessing.from_dict(values["preprocessing"]), tuple(values["noise_scales"]),
                   values["noise_per_size"], values["random_state"])
        gate.threshold_, gate.natural_min_, gate.noise_max_ = values["threshold"], values["natural_min"], values["noise_max"]
        return gate

    def save(self, path):
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path):
        return cls.from_dict(json.loads(Path(path).read_text()))
