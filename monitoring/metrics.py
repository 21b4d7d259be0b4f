"""Per-upload drift metrics: pure functions of one model-input image and its probabilities.

All images are the model's input in uint8 (height, width, channels), as made by
bundle.images.to_uint8 with the bundle's Preprocessing, so uploads are measured exactly as the
training reference was.

- confidence: the top class probability (falls under concept drift).
- intensity entropy: Shannon entropy, in bits, of the 256-bin histogram of grayscale intensities
  (ITU-R 601 luma, rounded as Pillow's "L" conversion does). 0 for a flat image, 1 for an image
  half black and half white, at most 10 for 1,024 pixels. Falls for dark, flat or line-art images.
- histogram distance: Hellinger distance between the image's colour histogram (16 bins per channel,
  each channel normalized to sum to 1) and the mean histogram of its predicted class, averaged over
  channels. Hellinger is chosen because it is bounded in [0, 1], symmetric, and defined when a bin
  is empty in one of the two histograms (chi-square and KL are not); 0 means identical.
"""

import numpy as np

BINS = 16
INTENSITY_LEVELS = 256


def _as_batch(images):
    """uint8 (h, w, c) or (n, h, w, c) -> (n, h, w, c) uint8, with a plain error for anything else."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"Expected uint8 model-input images, got dtype {images.dtype}.")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"Expected images of shape (height, width, 1 or 3), got {images.shape[-3:]}.")
    return images


def grayscale(images):
    """uint8 (n, h, w, c) -> uint8 (n, h, w) luma, the same integers Pillow's convert("L") gives."""
    images = _as_batch(images)
    if images.shape[-1] == 1:
        return images[..., 0]
    channels = images.astype(np.uint32)
    luma = (channels[..., 0] * 19595 + channels[..., 1] * 38470 + channels[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)


def intensity_entropies(images):
    """Shannon entropy (bits) of each image's 256-bin grayscale histogram, shape (n,)."""
    gray = grayscale(images)
    gray = gray.reshape(len(gray), -1)
    counts = _bincount_rows(gray, INTENSITY_LEVELS)
    probabilities = counts / gray.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log2(probabilities), 0.0)
    return np.maximum(-terms.sum(axis=1), 0.0)  # clip the -0.0 of a flat image


def intensity_entropy(image):
    return float(intensity_entropies(image)[0])


def colour_histograms(images, bins=BINS):
    """Per-channel histograms with `bins` equal-width bins, each channel summing to 1: (n, c, bins)."""
    images = _as_batch(images)
    n, height, width, channels = images.shape
    if 256 % bins:
        raise ValueError(f"bins must divide 256, got {bins}.")
    binned = (images // (256 // bins)).reshape(n, height * width, channels)
    binned = np.moveaxis(binned, 2, 1).reshape(n * channels, height * width)
    counts = _bincount_rows(binned, bins).reshape(n, channels, bins)
    return counts / float(height * width)


def colour_histogram(image, bins=BINS):
    return colour_histograms(image, bins)[0]


def hellinger_distances(histograms, references):
    """Hellinger distance between matching rows of two (n, c, bins) stacks, averaged over channels."""
    histograms, references = np.asarray(histograms, np.float64), np.asarray(references, np.float64)
    overlap = np.sqrt(histograms * references).sum(axis=-1)  # Bhattacharyya coefficient per channel
    return np.sqrt(np.clip(1.0 - overlap, 0.0, 1.0)).mean(axis=-1)


def hellinger_distance(histogram, reference):
    return float(hellinger_distances(np.asarray(histogram)[None], np.asarray(reference)[None])[0])


def confidences(probabilities):
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim == 1:
        probabilities = probabilities[None]
    if probabilities.ndim != 2 or probabilities.shape[1] == 0:
        raise ValueError(f"Expected class probabilities of shape (classes,) or (n, classes), got {probabilities.shape}.")
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("The class probabilities contain NaN or infinity.")
    return probabilities.max(axis=1)


def confidence(probabilities):
    return float(confidences(probabilities)[0])


def _bincount_rows(values, length):
    """Row-wise np.bincount of a 2-D integer array, in one vectorized call."""
    rows = values.shape[0]
    offsets = (np.arange(rows, dtype=np.int64) * length)[:, None]
    flat = np.bincount((values.astype(np.int64) + offsets).ravel(), minlength=rows * length)
    return flat.reshape(rows, length).astype(np.float64)
