"""Turning any picture, from a dataset or from a user, into the model's input.

One path for both, so that what the model was trained on and what it is served are made the same
way: decode safely, honour EXIF orientation, take the first frame, convert every mode to RGB (or L),
resize with Lanczos, scale to [0, 1].
"""

import io
import math
import os
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# An upload bigger than this is refused before it is decoded, with this sentence.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
TOO_LARGE = f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
# Width x height above which a file is treated as a decompression bomb (a 40-megapixel photo
# fits; a tiny PNG that claims 100,000 x 100,000 pixels does not).
MAX_PIXELS = 50_000_000
# The only decoders an upload can reach. Pillow would otherwise try every format it knows, EPS
# among them, which runs Ghostscript wherever that is installed. Cameras' MPO files open through
# Pillow's JPEG opener (naming "MPO" here raises KeyError: it registers no opener of its own).
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


# What one decoded pixel may cost while a picture is decoded and reduced: RGBA, 4 bytes.
BYTES_PER_PIXEL = 4
# Modes Image.reduce() takes; and how many output rows `reduced` makes from one strip at a time.
REDUCIBLE_MODES = ("L", "LA", "La", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "PA")
STRIP_BLOCKS = 64


class ImageError(ValueError):
    """A picture we cannot use; the message is written for the person who sent it."""


class Busy(ImageError):
    """The decode budget stayed full for longer than a visitor should wait."""


class DecodeBudget:
    """How many uploads one process reads and decodes at once, and how many megapixels those
    decodes hold together: the one bound on decoding memory, whatever route an upload came by.

        budget = DecodeBudget.for_machine()
        with budget.decode():                      # before the file's bytes are read
            with budget.pixels(width * height):    # from the header, before the pixels are decoded
                ...decode, then reduce to a working size...

    A request that cannot get its share within `wait_s` gets Busy, a plain "try again"."""

    def __init__(self, decodes=2, megapixels=64.0, wait_s=30.0):
        self.decodes, self.megapixels, self.wait_s = int(decodes), float(megapixels), wait_s
        self._decoding, self._pixels = 0, 0.0
        self._changed = threading.Condition()

    @classmethod
    def for_machine(cls, decodes=None, megapixels=None, wait_s=30.0, memory_share=0.01, max_decodes=4):
        """What is not given, sized from the machine: as many decodes as cores (at most
        `max_decodes`), and megapixels worth `memory_share` of its memory at BYTES_PER_PIXEL,
        never fewer than the largest picture we take."""
        if megapixels is None:
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            megapixels = max(MAX_PIXELS / 1e6, memory * memory_share / BYTES_PER_PIXEL / 1e6)
        return cls(decodes or min(max_decodes, os.cpu_count() or 1), megapixels, wait_s)

    @contextmanager
    def decode(self):
        with self._wait(lambda: self._decoding < self.decodes):
            self._decoding += 1
        try:
            yield
        finally:
            with self._changed:
                self._decoding -= 1
                self._changed.notify_all()

    @contextmanager
    def pixels(self, count):
        megapixels = min(count / 1e6, self.megapixels)  # a picture larger than the budget waits for all of it
        with self._wait(lambda: self._pixels + megapixels <= self.megapixels):
            self._pixels += megapixels
        try:
            yield
        finally:
            with self._changed:
                self._pixels -= megapixels
                self._changed.notify_all()

    @contextmanager
    def _wait(self, free):
        with self._changed:
            if not self._changed.wait_for(free, timeout=self.wait_s):
                raise Busy("The server is busy with other pictures; try again in a minute.")
            yield


@dataclass(frozen=True)
class Preprocessing:
    """How pictures become model input. Travels inside the bundle, so the app never guesses."""

    height: int = 32
    width: int = 32
    channels: int = 3  # 3 = RGB, 1 = grayscale
    scale: float = 1.0 / 255.0
    resample: str = "lanczos"
    # After the resize, a JPEG round trip at this quality (None: none). CIFAR-10 here is 32-pixel
    # JPEG at quality 75; without the same artefacts on every other picture (the extra classes,
    # rotated copies, uploads), the CNN learns "no JPEG artefacts" as the cue for the extra
    # classes and sends nearly every real photo there.
    jpeg_quality: int | None = None

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, values):
        return cls(**values)


def open_image(source, draft_side=None, budget=None):
    """Decode bytes, a path, a PIL image or an array into a fully loaded PIL image.

    With `draft_side`, a JPEG larger than twice that is decoded at a reduced scale (Pillow's
    draft mode: 1/2 to 1/8 in the DCT itself), never below `draft_side` a side: a 50-megapixel
    photo then costs a few megabytes, not 150. Any other format is decoded whole and at once
    reduced by an integer factor to the same working size (`reduced`), before any copy is made
    of it. With a `budget` (DecodeBudget), the decode first takes its megapixels from it, as the
    header declares them. Raises ImageError with a plain message for anything that is not a
    usable picture.
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, np.ndarray):
        image = _image_from_array(source)
    else:
        data = _read_bytes(source)
        if not data:
            raise ImageError("The file is empty.")
        if len(data) > MAX_UPLOAD_BYTES:
            raise ImageError(TOO_LARGE)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise ImageError("This file is not an image we can read (try JPEG, PNG, GIF, WebP or BMP).") from None
        except Image.DecompressionBombError:
            raise ImageError("The image has too many pixels to be decoded safely.") from None
        except Exception as error:
            raise ImageError(f"The image could not be read ({type(error).__name__}).") from None
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError("The image has no pixels.")
    # Checked before decoding: a small file can claim billions of pixels.
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"The image is {width} x {height} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels."
        )
    try:
        with nullcontext() if budget is None else budget.pixels(width * height):
            image.seek(0)  # first frame of an animated GIF or WebP
            if draft_side and image.format in ("JPEG", "MPO") and min(width, height) >= 2 * draft_side:
                image.draft(image.mode, (draft_side, draft_side))
            image.load()
            if draft_side:
                image = reduced(image, draft_side)
        image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"The image is damaged or truncated and could not be decoded ({error}).") from None
    except EOFError:
        raise ImageError("The image is truncated and could not be decoded.") from None
    return image


def reduced(image, side):
    """`image` shrunk by the largest integer factor that keeps its short side at least `side`
    and, for a long thin picture, its area near (2 * side)^2: every model and the correction
    copy need far less (the CNN 32 pixels, the ImageNet model 224, a correction 512)."""
    width, height = image.size
    factor = max(min(width, height) // side, math.ceil(math.sqrt(width * height / (2 * side) ** 2)))
    if factor <= 1:
        return image
    if image.mode not in REDUCIBLE_MODES:  # P, 1, I;16: nearest pixels, in the same mode
        return image.resize((max(1, width // factor), max(1, height // factor)), Image.Resampling.NEAREST)
    # A box filter over factor x factor blocks, a strip of rows at a time: Pillow reduces RGBA
    # and LA through a premultiplied copy, which for the whole picture would double its memory.
    out = Image.new(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
    rows = factor * STRIP_BLOCKS
    for top in range(0, height, rows):
        strip = image.crop((0, top, width, min(top + rows, height)))
        out.paste(strip.reduce(factor), (0, top // factor))
    return out


def to_mode(image, channels=3):
    """Convert any Pillow mode to RGB (channels=3) or L (channels=1), 8 bits per channel."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        image = _high_depth_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels carry arbitrary colours; show them on white, as a browser would.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    target = "RGB" if channels == 3 else "L"
    return image.convert(target)


def resize(image, height, width):
    return image.resize((width, height), Image.Resampling.LANCZOS)


def to_uint8(source, preprocessing=Preprocessing()):
    """Any picture -> uint8 array of shape (height, width, channels), Lanczos-resized."""
    image = to_mode(open_image(source), preprocessing.channels)
    image = resize(image, preprocessing.height, preprocessing.width)
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return jpeg_round_trip(array, preprocessing.jpeg_quality)


def jpeg_round_trip(array, quality):
    """A uint8 (h, w, c) picture as it comes back from JPEG at `quality` (unchanged for None)."""
    if quality is None:
        return array
    buffer = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[-1] == 1 else array).save(buffer, "JPEG", quality=int(quality))
    out = np.asarray(Image.open(buffer), dtype=np.uint8)
    return out[:, :, None] if out.ndim == 2 else out


def to_model_input(source, preprocessing=Preprocessing()):
    """Any picture -> float32 array in [0, 1] of shape (height, width, channels)."""
    return to_float(to_uint8(source, preprocessing), preprocessing.scale)


def to_float(pixels, scale=1.0 / 255.0):
    """uint8 pictures -> float32 in [0, 1]: the one place where pixels become model input."""
    return np.asarray(pixels).astype(np.float32) * np.float32(scale)


def is_thumbnail(image, preprocessing):
    """An upload no larger than the CNN's own input (a CIFAR-10 picture, say): the 224-pixel
    ImageNet model has nothing to see in it, and enlarging it would smooth noise into a blob."""
    return image.width <= preprocessing.width and image.height <= preprocessing.height


def read_upload(source):
    """The bytes of an upload given as bytes, a path or a file; None for a PIL image or an array.
    Size-checked before anything is read in full."""
    if isinstance(source, (Image.Image, np.ndarray)):
        return None
    data = _read_bytes(source)
    if not data:
        raise ImageError("The file is empty.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(TOO_LARGE)
    return data


def _read_bytes(source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            size = os.path.getsize(source)
        except OSError:
            raise ImageError("The uploaded file could not be found.") from None
        if size > MAX_UPLOAD_BYTES:
            raise ImageError(TOO_LARGE)
        with open(source, "rb") as handle:
            return handle.read()
    if hasattr(source, "read"):
        return source.read(MAX_UPLOAD_BYTES + 1)
    raise ImageError(f"Unsupported input type: {type(source).__name__}.")


def _image_from_array(array):
    if array.size == 0:
        raise ImageError("The image has no pixels.")
    if array.dtype != np.uint8:
        array = np.asarray(array, dtype=np.float64)
        high = 1.0 if array.max(initial=0) <= 1.0 else 255.0
        array = np.clip(array / high * 255.0, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3):
        raise ImageError(f"An image array must be 2- or 3-dimensional, not {array.ndim}.")
    return Image.fromarray(array)


def _high_depth_to_8bit(image):
    array = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if array.max(initial=0) <= 1.0 else 255.0
    else:
        # 16-bit files (I;16 or I holding 0..65535) are scaled down; 8-bit data in an I image stays.
        top = 65535.0 if array.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
