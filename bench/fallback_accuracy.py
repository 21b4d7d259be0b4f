"""Acceptance bench: the full system (CNN + OOD + ImageNet fallback) on real photos.

    python bench/fallback_accuracy.py                 # assets/ if it is a bundle, else the newest dev checkpoint
    python bench/fallback_accuracy.py --bundle assets --mistakes

The photos are ../shared/data/imagenet-samples/ (500, one per ImageNet class, <wnid>_<name>.JPEG).
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

from classifier.data import SHARED_DATA  # noqa: E402
from classifier.images import Preprocessing, open_image  # noqa: E402
from classifier.labels import CLASS_NAMES  # noqa: E402
from fallback.label_map import read_wordnet  # noqa: E402
from fallback.tuning import NONE, cnn_outputs, evaluate_policy, expected_classes  # noqa: E402

SAMPLES = SHARED_DATA / "imagenet-samples"


def load_cnn_bundle(source="assets"):
    """The committed bundle when there is one, else the newest dev checkpoint in a bare Bundle."""
    from classifier.bundle import Bundle

    if (Path(source) / "bundle.json").exists():
        return Bundle.load(source), f"bundle {source}"
    checkpoints = sorted(Path("runs").glob("*/checkpoint.keras"), key=lambda path: path.stat().st_mtime)
    if not checkpoints:
        sys.exit(f"No bundle at {source} and no runs/*/checkpoint.keras: train a model first.")
    import keras

    model = keras.saving.load_model(checkpoints[-1], compile=False)
    return Bundle(checkpoints[-1].parent, model, CLASS_NAMES, Preprocessing(), {}), f"dev checkpoint {checkpoints[-1]}"


def fallback_for(bundle):
    """The bundle's own fallback, or one built for this CNN by the real build stage (tuned on Tiny ImageNet val)."""
    if bundle.fallback is not None:
        return bundle.fallback, "the bundle's fallback/"
    from fallback import load_fallback
    from fallback.build import build

    directory = ".cache/fallback/bench-bundle"  # rewritten on every run
    build(bundle, directory)
    return load_fallback(Path(directory) / "fallback"), f"fallback.build for this CNN (written to {directory}/fallback)"


def main(arguments):
    bundle, source = load_cnn_bundle(arguments.bundle)
    fallback, fallback_source = fallback_for(bundle)
    paths = sorted(SAMPLES.glob("*.JPEG"))
    pictures = [open_image(path) for path in paths]
    wnids = [path.name.split("_")[0] for path in paths]
    targets = expected_classes(wnids, fallback.label_map, read_wordnet().imagenet_wnids)
    cnn_probabilities, inlier = cnn_outputs(bundle, pictures)
    masses = fallback.class_masses(pictures)
    policy = fallback.policy

    full = evaluate_policy(policy, cnn_probabilities, inlier, masses, targets)
    no_fallback = evaluate_policy(policy, cnn_probabilities, inlier, np.zeros_like(masses), targets)
    ours = targets != NONE
    cnn_alone = float(np.mean(cnn_probabilities[ours].argmax(1) == targets[ours]))
    fallback_top = masses.argmax(1)
    fallback_alone = float(np.mean(fallback_top[ours] == targets[ours]))

    print(f"CNN: {source}; fallback: {fallback_source}")
    print("OOD detector: " + ("the bundle's" if inlier is not None else "none in this bundle, so every photo counts as an inlier"))
    print(f"policy: {policy}")
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
            decision = policy.decide(cnn_probabilities[index], None if inlier is None else inlier[index], lambda: masses[index])
            answer = NONE if decision.class_index is None else decision.class_index
            if answer != targets[index]:
                expected = "none" if targets[index] == NONE else CLASS_NAMES[targets[index]]
                print(f"  {paths[index].name}: expected {expected}, got {decision.answered_by} "
                      f"{'' if decision.class_index is None else CLASS_NAMES[decision.class_index]} ({decision.confidence:.2f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="assets")
    parser.add_argument("--mistakes", action="store_true", help="list every photo the full system gets wrong")
    main(parser.parse_args())
