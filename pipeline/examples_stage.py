"""The app's example pictures, written into the bundle's examples/ folder.

    examples_stage.run(dataset, context, bundle_dir / "examples")
"""

from pathlib import Path

EXAMPLE_PHOTOS = (
    "n02123597_Siamese_cat.JPEG", "n02690373_airliner.JPEG", "n03095699_container_ship.JPEG",
    "n02110958_pug.JPEG", "n02504458_African_elephant.JPEG", "n07753592_banana.JPEG",
    "n04461696_tow_truck.JPEG", "n04548280_wall_clock.JPEG", "n09472597_volcano.JPEG",
)


def run(dataset, context, target, count=9):
    """The app's examples: a few real photos (shrunk, so the repo stays small), or for a bundle on
    other data, the first test picture of each class."""
    from PIL import Image

    target.mkdir(parents=True, exist_ok=True)
    photos = context.data_path("imagenet-samples")
    if context.data_config.source is None and photos is not None:
        for name in EXAMPLE_PHOTOS:
            if (photos / name).exists():
                with Image.open(photos / name) as image:
                    image = image.convert("RGB")
                    image.thumbnail((320, 320), Image.Resampling.LANCZOS)
                    image.save(target / (Path(name).stem.split("_", 1)[1] + ".jpg"), quality=90)
        return
    for label, name in list(enumerate(dataset.class_names))[:count]:
        rows = (dataset.y_test == label).nonzero()[0]
        if len(rows):
            image = dataset.x_test[rows[0]]
            Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image).save(target / f"{name}.jpg", quality=95)
