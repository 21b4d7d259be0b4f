"""Latency the ImageNet fallback adds per consulted upload (target: <= 30 ms on this CPU).

    python bench/fallback_latency.py                  # assets/fallback if built, else the data folder's MobileNetV2
    python bench/fallback_latency.py --model ../shared/data/imagenet-models/mobilenet_v1_0.25_128_quant.tflite
    python bench/fallback_latency.py --limit 50       # the first 50 photos only

The data folder (its imagenet-samples/, and imagenet-models/ and wordnet/ without a built fallback)
is --data-dir, else $HONEST_DATA_DIR, else ../shared/data.

Each of the 500 imagenet-samples photos, already decoded (as an upload is before the CNN runs),
goes through fallback.class_masses: crop, Lanczos resize, TFLite inference, label map.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dev import data_folder  # noqa: E402
from bundle.images import open_image  # noqa: E402
from classifier.label_map import build_label_map  # noqa: E402
from fallback import Fallback, load_fallback  # noqa: E402
from fallback.models import (  # noqa: E402
    IMAGENET_LABELS, MOBILENET_V2, MODELS_DIR, TFLiteImageNetClassifier, central_crop, read_imagenet_labels,
)


def main(arguments):
    data_dir = data_folder(arguments.data_dir)
    if arguments.model is None and (Path(arguments.bundle) / "fallback" / "fallback_config.json").exists():
        fallback, source = load_fallback(Path(arguments.bundle) / "fallback"), f"{arguments.bundle}/fallback"
    else:
        model = arguments.model or data_dir / MODELS_DIR / MOBILENET_V2
        classifier = TFLiteImageNetClassifier(model, num_threads=arguments.threads)
        labels = read_imagenet_labels(data_dir / MODELS_DIR / IMAGENET_LABELS)
        fallback, source = Fallback(classifier, build_label_map(data_dir / "wordnet"), labels), str(model)
    paths = sorted((data_dir / "imagenet-samples").glob("*.JPEG"))[: arguments.limit]
    if len(paths) < 4:
        sys.exit(f"Too few photos in {data_dir / 'imagenet-samples'}: give the data folder with --data-dir.")
    pictures = [open_image(path) for path in paths]
    fallback.class_masses(pictures[:3])  # the interpreter starts on first use; not counted

    total, preprocessing = [], []
    for picture in pictures:
        start = time.perf_counter()
        fallback.class_masses([picture])
        total.append(time.perf_counter() - start)
        start = time.perf_counter()
        central_crop(picture, fallback.classifier.input_size)
        preprocessing.append(time.perf_counter() - start)
    total, preprocessing = np.array(total) * 1000, np.array(preprocessing) * 1000
    sizes = np.array([picture.size for picture in pictures])
    print(f"fallback: {source} ({fallback.classifier.num_threads} thread(s)); {len(pictures)} photos, "
          f"median size {int(np.median(sizes[:, 0]))}x{int(np.median(sizes[:, 1]))}")
    print(f"per consulted image: median {np.median(total):.1f} ms, mean {total.mean():.1f} ms, "
          f"p95 {np.percentile(total, 95):.1f} ms, max {total.max():.1f} ms (target <= 30 ms)")
    print(f"  of which crop + Lanczos resize: median {np.median(preprocessing):.1f} ms; "
          f"inference + label map: median {np.median(total) - np.median(preprocessing):.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="assets")
    parser.add_argument("--model", default=None, help="a TFLite model instead of the bundle's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos (default: all 500)")
    parser.add_argument("--data-dir", default=None, help="the data folder (default: $HONEST_DATA_DIR, else ../shared/data)")
    main(parser.parse_args())
