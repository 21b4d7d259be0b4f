"""Acceptance bench: the full system (CNN + OOD + ImageNet fallback) on real photos.

    python bench/fallback_accuracy.py                 # assets/ if it is a bundle, else the newest dev checkpoint
    python bench/fallback_accuracy.py --bundle assets --mistakes
    python bench/fallback_accuracy.py --limit 40      # a quick look at the first 40 photos

The photos are the data folder's imagenet-samples/ (500, one per ImageNet class,
<wnid>_<name>.JPEG); the data folder is --data-dir, else $HONEST_DATA_DIR, else ../shared/data.
The label map gives each its expected answer: one of our classes, or none of ours (to be refused).
These photos are never used for tuning. Targets: >= 85% right on photos of our classes, >= 70% of
the others refused.
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dev import data_folder  # noqa: E402
from bundle.images import Preprocessing, open_image  # noqa: E402
from bundle.labels import CLASS_NAMES  # noqa: E402
from classifier.wordnet import read_wordnet  # noqa: E402
from pipeline.answer_tuning import NONE, cnn_outputs, evaluate_rule, expected_classes  # noqa: E402


def load_cnn_bundle(source="assets"):
    """The committed bundle when there is one, else the newest dev checkpoint in a bare Bundle."""
    from service.bundle import Bundle

    if (Path(source) / "bundle.json").exists():
        return Bundle.load(source), f"bundle {source}"
    checkpoints = sorted(Path("runs").glob("*/checkpoint.keras"), key=lambda path: path.stat().st_mtime)
    if not checkpoints:
        sys.exit(f"No bundle at {source} and no runs/*/checkpoint.keras: train a model first.")
    import keras

    model = keras.saving.load_model(checkpoints[-1], compile=False)
    return Bundle(checkpoints[-1].parent, model, CLASS_NAMES, Preprocessing(), {}), f"dev checkpoint {checkpoints[-1]}"


def fallback_for(bundle, data_dir):
    """The bundle's own fallback, or one built for this CNN by the real build stage, which also
    tunes the answer rule (on Tiny ImageNet val and the CNN's validation pictures)."""
    if bundle.fallback is not None:
        return bundle.fallback, "the bundle's fallback/"
    from bench.dev import dev_data_config
    from classifier.dataset import prepare_dataset
    from pipeline.context import BuildContext
    from pipeline.fallback_stage import run

    directory = Path(".cache/fallback/bench-bundle")  # rewritten on every run
    data = dev_data_config(data_dir)  # a dev checkpoint is trained on the development data
    run(BuildContext(bundle, prepare_dataset(data), {}, directory, data, str(data_dir)))
    return bundle.fallback, f"pipeline.fallback_stage for this CNN (written to {directory})"


def main(arguments):
    data_dir = data_folder(arguments.data_dir)
    bundle, source = load_cnn_bundle(arguments.bundle)
    fallback, fallback_source = fallback_for(bundle, data_dir)
    paths = sorted((data_dir / "imagenet-samples").glob("*.JPEG"))[: arguments.limit]
    if not paths:
        sys.exit(f"No photos in {data_dir / 'imagenet-samples'}: give the data folder with --data-dir.")
    pictures = [open_image(path) for path in paths]
    wnids = [path.name.split("_")[0] for path in paths]
    targets = expected_classes(wnids, fallback.label_map, read_wordnet(data_dir / "wordnet").imagenet_wnids)
    cnn_probabilities, inlier = cnn_outputs(bundle, pictures)
    masses = fallback.class_masses(pictures)
    rule = bundle.answer_rule

    full = evaluate_rule(rule, cnn_probabilities, inlier, masses, targets)
    no_fallback = evaluate_rule(rule, cnn_probabilities, inlier, np.zeros_like(masses), targets)
    ours = targets != NONE
    cnn_alone = float(np.mean(cnn_probabilities[ours].argmax(1) == targets[ours]))
    fallback_top = masses.argmax(1)
    fallback_alone = float(np.mean(fallback_top[ours] == targets[ours]))

    print(f"CNN: {source}; fallback: {fallback_source}")
    print("OOD detector: " + ("the bundle's" if inlier is not None else "none in this bundle, so every photo counts as an inlier"))
    print(f"answer rule: {rule}")
    print(f"photos: {len(paths)}; of our classes {full['pictures_ours']}, of none of ours {full['pictures_none']}")
    print(f"  per class: {dict(Counter(CLASS_NAMES[t] for t in targets[ours]))}")
    print(f"full system (CNN + OOD + fallback): {full['accuracy_ours']:.1%} right on our classes (target >= 85%), "
          f"{full['refused_none']:.1%} of the others refused (target >= 70%)")
    print(f"  answered by: {full['answered_by']}; fallback consulted for {full['consulted']:.1%} of photos")
    print(f"CNN alone (top class, never refuses): {cnn_alone:.1%} right on our classes")
    print(f"CNN + OOD, no fallback (refuses when unsure): {no_fallback['accuracy_ours']:.1%} right, {no_fallback['refused_none']:.1%} refused")
    print(f"fallback alone (top mapped class): {fallback_alone:.1%} right on our classes")
    if arguments.mistakes:
        for index in range(len(paths)):
            decision = rule.decide(cnn_probabilities[index], None if inlier is None else inlier[index], lambda: masses[index],
                                   bundle.class_names)
            answer = NONE if decision.class_index is None else decision.class_index
            if answer != targets[index]:
                expected = "none" if targets[index] == NONE else CLASS_NAMES[targets[index]]
                print(f"  {paths[index].name}: expected {expected}, got {decision.answered_by} "
                      f"{'' if decision.class_index is None else CLASS_NAMES[decision.class_index]} ({decision.confidence:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="assets")
    parser.add_argument("--mistakes", action="store_true", help="list every photo the full system gets wrong")
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos (default: all 500)")
    parser.add_argument("--data-dir", default=None, help="the data folder (default: $HONEST_DATA_DIR, else ../shared/data)")
    main(parser.parse_args())
