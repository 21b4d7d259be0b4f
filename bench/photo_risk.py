"""Right or silent on full-size photos: the shipped rule, and each candidate score as a
risk-coverage curve, on the bench half of the data folder's imagenet-samples.

    python -m bench.photo_risk [--assets assets] [--data-dir DIR] [--split bench|tune|all]

The photos: imagenet-samples/ (500, one per ImageNet class, <wnid>_<name>.JPEG), split once and
for all by classifier.readers.even_odd_split: even positions of the sorted file names tune, odd
positions measure (`--split bench`, the default; never used to fit or choose anything). The
WordNet label map gives each photo its expected answer: one of our classes, or none (refuse it).

Prints:
- the ImageNet fallback's own top-1 and top-5 on the split (its 1,000 classes, before any map);
- the shipped rule: right / wrong / refused on photos of our classes, and others refused, and
  which of the two refusals each refused photo got (service.answer);
- for each candidate score, the risk-coverage table: answer a photo when the score clears a
  threshold, with the score's class; risk = wrong answers among all answers (an answered photo of
  none of ours is wrong), coverage = share of our photos answered right. For each risk goal, the
  largest coverage reached and the share of other photos refused there.
Candidate scores: the CNN's top probability, the fallback's mapped mass, the fallback's mass when
CNN and fallback agree (else 0), and the CNN's top probability when the OOD detector accepts.
"""

import argparse

import numpy as np

from bench.app_server import REPO

def photos(data_dir, split):
    """(paths, wnids) of the chosen half of imagenet-samples."""
    from classifier.ood_sets import imagenet_photo_paths, photo_wnid

    paths = imagenet_photo_paths(data_dir, "all", half=None if split == "all" else split)
    return paths, [photo_wnid(path) for path in paths]


def main():
    from bench.dev import data_folder
    from bundle.images import open_image
    from classifier.wordnet import read_wordnet
    from pipeline.answer_tuning import NONE, cnn_outputs, evaluate_rule, expected_classes, format_risk_coverage, risk_coverage_table
    from service.bundle import Bundle

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", default=str(REPO / "assets"))
    parser.add_argument("--data-dir", default=None, help="the data folder (default: $HONEST_DATA_DIR, else ../shared/data)")
    parser.add_argument("--split", choices=("bench", "tune", "all"), default="bench")
    args = parser.parse_args()
    data_dir = data_folder(args.data_dir)
    bundle = Bundle.load(args.assets)
    paths, wnids = photos(data_dir, args.split)
    pictures = [open_image(path, draft_side=1024) for path in paths]
    imagenet_wnids = read_wordnet(data_dir / "wordnet").imagenet_wnids
    targets = expected_classes(wnids, bundle.fallback.label_map, imagenet_wnids)
    ours = targets != NONE

    imagenet = bundle.fallback.imagenet_probabilities(pictures)
    truth = np.array([imagenet_wnids.index(wnid) for wnid in wnids])
    top5 = np.argsort(-imagenet, axis=1)[:, :5]
    print(f"{len(paths)} photos ({args.split} half of imagenet-samples): {int(ours.sum())} of our classes, "
          f"{int((~ours).sum())} of none of ours")
    print(f"ImageNet fallback alone: top-1 {np.mean(top5[:, 0] == truth):.1%}, "
          f"top-5 {np.mean((top5 == truth[:, None]).any(axis=1)):.1%} (its own 1,000 classes)")

    probabilities, inlier = cnn_outputs(bundle, pictures)
    masses = bundle.fallback.masses_from_probabilities(imagenet)
    rule = bundle.answer_rule
    full = evaluate_rule(rule, probabilities, inlier, masses, targets)
    decisions = [rule.decide(probabilities[i], None if inlier is None else inlier[i], lambda i=i: masses[i]) for i in range(len(paths))]
    answers = np.array([NONE if decision.class_index is None else decision.class_index for decision in decisions])
    print(f"shipped rule {rule}: of our photos {np.mean(answers[ours] == targets[ours]):.1%} right, "
          f"{np.mean((answers[ours] != targets[ours]) & (answers[ours] != NONE)):.1%} wrong, "
          f"{np.mean(answers[ours] == NONE):.1%} refused; {full['refused_none']:.1%} of the others refused; "
          f"answered by {full['answered_by']}")
    kinds = np.array([decision.refusal or "" for decision in decisions])
    for name, rows in (("ours", ours), ("none of ours", ~ours)):
        refused = kinds[rows][kinds[rows] != ""]
        print(f"  refused photos of {name}: {int(np.sum(refused == 'unsure'))} 'Not sure enough to answer.', "
              f"{int(np.sum(refused == 'unknown'))} 'not in our training set'")
    print(f"CNN alone (its top class, never refusing): {np.mean(probabilities[ours].argmax(1) == targets[ours]):.1%} right on our classes")

    cnn_class, fallback_class = probabilities.argmax(1), masses.argmax(1)
    accepted = np.ones(len(paths), bool) if inlier is None else np.asarray(inlier, bool)
    candidates = {
        "CNN top probability": (probabilities.max(1), cnn_class),
        "fallback mapped mass": (masses.max(1), fallback_class),
        "fallback mass where CNN agrees": (np.where(cnn_class == fallback_class, masses.max(1), 0.0), fallback_class),
        "CNN top probability, OOD accepted": (np.where(accepted, probabilities.max(1), 0.0), cnn_class),
    }
    print("risk-coverage (answer when the score clears the threshold; risk = wrong among answers):")
    print(format_risk_coverage(risk_coverage_table(candidates, targets)))


if __name__ == "__main__":
    main()
