"""Decoding and resizing of every kind of picture a user can send."""

import numpy as np
import pytest
from PIL import Image

from bundle.images import ImageError, Preprocessing, open_image, to_model_input, to_uint8
from tests.bad_inputs import animated_gif, encode, png_claiming


@pytest.fixture(scope="module")
def photo(example_photos):
    # A real photo the repository ships: these tests need no data folder.
    return Image.open(example_photos["Siamese_cat"]).convert("RGB")


def test_odd_sized_rgb_is_lanczos_resized_to_model_input(photo):
    odd = photo.resize((37, 53))
    expected = np.asarray(odd.resize((32, 32), Image.Resampling.LANCZOS))
    assert np.array_equal(to_uint8(encode(odd)), expected)
    got = to_model_input(encode(odd))
    assert got.shape == (32, 32, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected / 255, atol=1e-6)
    assert 0.0 <= got.min() and got.max() <= 1.0


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(photo, mode):
    image = photo.convert(mode) if mode not in ("I;16", "I", "F") else photo.convert("L").convert(mode)
    data = encode(image, "TIFF" if mode in ("CMYK", "F") else "PNG")
    got = to_uint8(data)
    assert got.shape == (32, 32, 3) and got.dtype == np.uint8
    assert got.std() > 5, "the picture's content survived the conversion"


def test_sixteen_bit_png_is_scaled_not_clipped():
    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    got = to_uint8(encode(Image.fromarray(ramp)))
    assert got.min() < 20 and got.max() > 235


def test_alpha_is_composited_on_white():
    transparent = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    got = to_uint8(encode(transparent))
    assert (got == 255).all()


def test_exif_orientation_is_honoured():
    # A 60x20 picture, left half black, stored with EXIF "rotate 90 clockwise" (orientation 6).
    array = np.zeros((20, 60, 3), np.uint8)
    array[:, 30:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    image = open_image(encode(Image.fromarray(array), "JPEG", exif=exif))
    assert image.size == (20, 60)
    pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels[:25].mean() < 60 and pixels[-25:].mean() > 200


def test_animated_gif_uses_first_frame():
    got = to_uint8(animated_gif())
    assert got[..., 0].mean() > 200 and got[..., 2].mean() < 50


def test_one_pixel_image():
    got = to_uint8(encode(Image.new("RGB", (1, 1), (10, 200, 30))))
    assert got.shape == (32, 32, 3)
    assert np.abs(got.astype(int) - [10, 200, 30]).max() <= 1


def test_grayscale_preprocessing_gives_one_channel(photo):
    got = to_model_input(encode(photo), Preprocessing(height=28, width=28, channels=1))
    assert got.shape == (28, 28, 1)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is plainly a text file, not a picture", "not an image"),
        (png_claiming(100_000, 100_000), "pixels"),
    ],
)
def test_bad_input_gets_a_clear_message(data, message):
    with pytest.raises(ImageError, match=message):
        to_uint8(data)


def test_truncated_jpeg_gets_a_clear_message(photo):
    data = encode(photo, "JPEG")
    with pytest.raises(ImageError, match="truncated|damaged"):
        to_uint8(data[: len(data) // 3])


def test_missing_file_gets_a_clear_message(tmp_path):
    with pytest.raises(ImageError, match="could not be found"):
        to_uint8(tmp_path / "nothing-here.jpg")


def test_the_jpeg_round_trip_gives_uploads_cifar10s_own_artefacts(shared_data, photo_paths):
    """CIFAR-10 here is 32-pixel JPEG at quality 75: one more round trip barely changes it, while a
    Lanczos-downscaled photo, smooth until now, changes several times more."""
    from bundle.images import jpeg_round_trip
    from classifier.readers import load_image_folder

    cifar, _, _ = load_image_folder(shared_data / "cifar10-jpeg.tgz", "cifar10/test", limit_per_class=5)
    photos = np.stack([to_uint8(path) for path in photo_paths[:50]])

    def change(images):
        return np.mean([np.abs(jpeg_round_trip(image, 75).astype(int) - image).mean() for image in images])

    assert change(cifar) * 2 < change(photos), (change(cifar), change(photos))
    with_jpeg = to_uint8(photo_paths[0], Preprocessing(jpeg_quality=75))
    np.testing.assert_array_equal(with_jpeg, jpeg_round_trip(to_uint8(photo_paths[0]), 75))
    gray = to_uint8(photo_paths[0], Preprocessing(height=28, width=28, channels=1, jpeg_quality=75))
    assert gray.shape == (28, 28, 1)


def test_bundles_made_before_the_jpeg_setting_load_without_it():
    old_manifest = {"height": 32, "width": 32, "channels": 3, "scale": 1 / 255, "resample": "lanczos"}
    assert Preprocessing.from_dict(old_manifest).jpeg_quality is None


def test_a_large_upload_is_reduced_on_load_to_the_same_pixels_as_a_whole_reduce():
    import numpy as np

    from bundle.images import reduced

    rng = np.random.default_rng(0)
    for mode, size in (("RGBA", (2999, 2101)), ("RGB", (5000, 700)), ("L", (2100, 2100))):
        shape = (size[1], size[0], len(mode)) if len(mode) > 1 else (size[1], size[0])
        picture = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        out = reduced(picture, 512)
        factor = round(picture.width / out.width)
        assert factor > 1 and min(out.size) >= 256
        assert np.array_equal(np.asarray(out), np.asarray(picture.reduce(factor))), mode
    palette = Image.new("P", (4000, 3000))
    assert reduced(palette, 1024).mode == "P" and reduced(palette, 1024).size == (2000, 1500)
    small = Image.new("RGB", (1500, 1500))
    assert reduced(small, 1024) is small


def test_open_image_with_a_working_side_decodes_a_49_megapixel_png_into_little():
    import io

    from bundle.images import DecodeBudget, open_image

    buffer = io.BytesIO()
    Image.new("RGBA", (7000, 7000), (90, 140, 200, 255)).save(buffer, format="PNG")
    picture = open_image(buffer.getvalue(), draft_side=1024, budget=DecodeBudget(1, 50))
    assert picture.size == (1167, 1167)


def test_the_decode_budget_bounds_decodes_and_megapixels_and_says_busy():
    import threading

    from bundle.images import Busy, DecodeBudget

    budget = DecodeBudget(decodes=1, megapixels=60, wait_s=0.2)
    with budget.decode():
        with pytest.raises(Busy, match="busy"):
            with budget.decode():
                pass
    with budget.pixels(49e6):
        with pytest.raises(Busy):
            with budget.pixels(20e6):
                pass
        with budget.pixels(10e6):  # what still fits goes through
            pass
    # A waiting decode goes as soon as the one before it is done.
    budget = DecodeBudget(decodes=1, megapixels=60, wait_s=5)
    order = []

    def second():
        with budget.decode():
            order.append("second")

    with budget.decode():
        thread = threading.Thread(target=second)
        thread.start()
        order.append("first")
    thread.join()
    assert order == ["first", "second"]
    machine = DecodeBudget.for_machine()
    assert machine.decodes >= 1 and machine.megapixels >= 50
