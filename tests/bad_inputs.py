"""Real files of every awkward kind a user can upload, written for the tests (never fakes of our code)."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image, format="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def png_claiming(width, height):
    """A valid PNG header that claims a huge size, with almost no data: a decompression bomb."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def animated_gif(colours=((255, 0, 0), (0, 0, 255)), size=16):
    frames = [Image.new("RGB", (size, size), colour) for colour in colours]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def exif_rotated_jpeg(image):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    return encode(image.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif)


def unusable_files(photo):
    """name -> (bytes, regex the plain message must match): files we must refuse politely."""
    jpeg = encode(photo, "JPEG")
    return {
        "empty.jpg": (b"", "empty"),
        "notes.jpg": (b"this is plainly a text file, not a picture", "not an image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "truncated|damaged"),
        "bomb.png": (png_claiming(100_000, 100_000), "pixels"),
    }


def awkward_but_valid_files(photo):
    """name -> bytes: odd pictures that must still be classified."""
    gray16 = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return {
        "grayscale.png": encode(photo.convert("L")),
        "cmyk.jpg": encode(photo.convert("CMYK"), "JPEG"),
        "alpha.png": encode(photo.convert("RGBA")),
        "palette.png": encode(photo.convert("P")),
        "sixteen-bit.png": encode(Image.fromarray(gray16)),
        "animated.gif": animated_gif(),
        "exif-rotated.jpg": exif_rotated_jpeg(photo),
        "one-pixel.png": encode(Image.new("RGB", (1, 1), (120, 80, 40))),
        "huge-but-fine.jpg": encode(photo.resize((4000, 3000)), "JPEG", quality=70),
    }
