"""The gate: a challenger bundle against the champion, on the same data in one run.

    python -m pipeline.gate --champion assets --challenger state/bundles/V [--corrections STORE] [--promote] [--mlflow [FOLDER]]
    report = compare(champion_dir, challenger_dir, data_dir, held_out)     # {"rows", "passed", "reasons"}

Both bundles are measured the same way, on pictures that neither trained on nor tuned anything:
- the CIFAR-10 test split: the CNN's 10-class accuracy and its accuracy on all 13 classes; the
  answer rule on those pictures as 32-pixel uploads (right, wrong);
- the bench half of the data folder's photos (odd positions of imagenet-samples): the CNN's own
  top-1 on photos of our classes, and the whole system (right, wrong, other photos refused);
- near-OOD: the test split against Tiny ImageNet classes at odd positions (AUROC, FPR at 95% TPR);
- the learning pictures held out of the learning step (pipeline.learn.is_held_out): the CNN's top-1.
The challenger passes when no row is worse than the champion's by more than its tolerance
(GateConfig); the report names every row that failed. check_and_register records the verdict
beside the version in the registry (service.registry), and with promote=True promotes a passing one.
"""

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from bundle.atomic import write_json_atomic

GATE_FILE = "gate.json"
MLFLOW_HELP = ("log both bundles' runs to MLflow, register them and move the `champion` alias on a promotion "
               "(store: $MLFLOW_TRACKING_URI, else FOLDER/mlruns.db; pip install -r requirements-mlflow.txt)")


@dataclass(frozen=True)
class GateConfig:
    # How much worse than the champion a row may be (in its own units: shares, AUROC).
    cifar10_accuracy: float = 0.003
    all_classes_accuracy: float = 0.005
    thumbnails_right: float = 0.01
    thumbnails_wrong: float = 0.005
    photos_cnn_top1: float = 0.0
    photos_right: float = 0.0
    photos_wrong: float = 0.0
    photos_others_refused: float = 0.0
    near_ood_auroc: float = 0.01
    held_out_cnn_top1: float = 0.0


# (row, what it is, higher is better)
ROWS = (
    ("cifar10_accuracy", "CIFAR-10 test, 10-class accuracy (CNN)", True),
    ("all_classes_accuracy", "test split, all 13 classes (CNN)", True),
    ("thumbnails_right", "CIFAR-10 test as 32-px uploads: right", True),
    ("thumbnails_wrong", "CIFAR-10 test as 32-px uploads: wrong", False),
    ("photos_cnn_top1", "bench photos of ours: the CNN's own top-1", True),
    ("photos_right", "bench photos of ours: right (whole app)", True),
    ("photos_wrong", "bench photos of ours: wrong (whole app)", False),
    ("photos_others_refused", "bench photos of other things: refused", True),
    ("near_ood_auroc", "near-OOD AUROC (odd Tiny ImageNet classes)", True),
    ("near_ood_fpr95", "near-OOD FPR at 95% TPR", False),
    ("held_out_cnn_top1", "held-out learning pictures: the CNN's top-1", True),
)


def measure(bundle, sets):
    """One bundle's figures on the gate's sets (see evaluation_sets)."""
    from pipeline.answer_tuning import NONE, evaluate_rule
    from pipeline.ood_evaluation import auroc, fpr_at_tpr

    rule, detector = bundle.answer_rule, bundle.ood_detector

    def outputs(x):
        embedding = bundle.embed(x)
        predicted = embedding.probabilities.argmax(1)
        scores = None if detector is None else np.asarray(detector.decision_function(getattr(embedding, detector.reads), predicted))
        return embedding.probabilities, scores

    y = sets["y_test"]
    probabilities, scores = outputs(sets["x_test"])
    cifar10 = y < 10
    thumbnails = evaluate_rule(rule, probabilities[cifar10], None if scores is None else scores[cifar10] >= 0, None,
                               y[cifar10], thumbnail=True)
    photo_probabilities, photo_scores = outputs(bundle.preprocess(sets["photos"]))
    photos = evaluate_rule(rule, photo_probabilities, None if photo_scores is None else photo_scores >= 0,
                           sets["photo_masses"], sets["photo_targets"])
    ours = sets["photo_targets"] != NONE
    _, near_scores = outputs(sets["near_ood"])
    held = sets["held_out_x"]
    return {
        "cifar10_accuracy": float(np.mean(probabilities[cifar10][:, :10].argmax(1) == y[cifar10])),
        "all_classes_accuracy": float(np.mean(probabilities.argmax(1) == y)),
        "thumbnails_right": thumbnails["accuracy_ours"], "thumbnails_wrong": thumbnails["wrong_ours"],
        "photos_cnn_top1": float(np.mean(photo_probabilities[ours].argmax(1) == sets["photo_targets"][ours])),
        "photos_right": photos["accuracy_ours"], "photos_wrong": photos["wrong_ours"],
        "photos_others_refused": photos["refused_none"],
        "near_ood_auroc": None if scores is None else float(auroc(scores, near_scores)),
        "near_ood_fpr95": None if scores is None else float(fpr_at_tpr(scores, near_scores)),
        "held_out_cnn_top1": float(np.mean(bundle.embed(held).probabilities.argmax(1) == sets["held_out_y"])) if len(held) else None,
    }


def evaluation_sets(champion, data_dir, held_out_x, held_out_y):
    """The pictures both bundles are measured on, loaded once."""
    from bundle.images import open_image
    from classifier.dataset import prepare_dataset
    from classifier.ood_sets import imagenet_photo_paths, near_ood_images, photo_wnid
    from classifier.wordnet import read_wordnet
    from fallback.label_map import load_label_map
    from pipeline.answer_tuning import expected_classes
    from pipeline.bundle_files import recorded_data_config

    dataset = prepare_dataset(replace(recorded_data_config(champion.directory), data_dir=str(data_dir)))
    paths = imagenet_photo_paths(data_dir, "all", half="bench")
    photos = [open_image(path, draft_side=1024) for path in paths]
    label_map = load_label_map(champion.directory / "fallback" / "label_map.json")
    return {
        "x_test": dataset.x_test, "y_test": dataset.y_test, "photos": photos,
        "photo_targets": expected_classes([photo_wnid(path) for path in paths], label_map,
                                          read_wordnet(Path(data_dir) / "wordnet").imagenet_wnids),
        # One fallback for both: the learning step never changes the ImageNet model or its map.
        "photo_masses": champion.fallback.class_masses(photos),
        "near_ood": near_ood_images(data_dir, champion.preprocessing, positions="odd"),
        "held_out_x": held_out_x, "held_out_y": held_out_y,
    }


def compare(champion_dir, challenger_dir, data_dir, held_out_x=None, held_out_y=None, config=GateConfig()):
    """Measure both bundles on the same sets; returns {"rows", "passed", "reasons", "tolerances"}."""
    from service.bundle import Bundle

    champion, challenger = Bundle.load(champion_dir), Bundle.load(challenger_dir, with_fallback=False)
    shape = (0, *champion.input_shape)
    held_x = np.zeros(shape, np.uint8) if held_out_x is None else held_out_x
    held_y = np.zeros(0, np.int64) if held_out_y is None else held_out_y
    sets = evaluation_sets(champion, data_dir, held_x, held_y)
    before, after = measure(champion, sets), measure(challenger, sets)
    tolerances, reasons, rows = asdict(config), [], []
    for key, label, higher in ROWS:
        old, new = before[key], after[key]
        tolerance = tolerances.get(key)
        failed = None not in (old, new) and tolerance is not None and (
            new < old - tolerance - 1e-12 if higher else new > old + tolerance + 1e-12)
        if failed:
            reasons.append(f"{label}: {new:.4f} against the champion's {old:.4f} (tolerance {tolerance})")
        rows.append({"row": key, "what": label, "champion": old, "challenger": new, "tolerance": tolerance, "failed": bool(failed)})
    return {"champion": champion.version, "challenger": challenger.version, "rows": rows, "passed": not reasons,
            "reasons": reasons, "tolerances": tolerances, "sets": {
                "test": len(sets["y_test"]), "photos": len(sets["photos"]), "near_ood": len(sets["near_ood"]),
                "held_out": int(len(held_y))}}


def format_report(report):
    lines = [f"{'':52} {'champion':>9} {'challenger':>10}"]
    for row in report["rows"]:
        show = [("-" if v is None else f"{v:.4f}") for v in (row["champion"], row["challenger"])]
        lines.append(f"{row['what']:52} {show[0]:>9} {show[1]:>10}{'  <- worse than allowed' if row['failed'] else ''}")
    lines.append("passed" if report["passed"] else "refused: " + "; ".join(report["reasons"]))
    return "\n".join(lines)


def check_and_register(champion_dir, challenger_dir, store_target, data_dir, promote=False, mlflow_folder=None, log=print):
    """Gate the challenger (with the learning step's held-out pictures), write gate.json beside it,
    record both in the registry (the champion first, if the registry names none) and promote on a
    pass; with mlflow_folder, log both runs to MLflow as well (pipeline.tracking.log_gate_runs)."""
    from bundle.images import Preprocessing
    from pipeline.learning_material import LEARNING_FILE, read_material
    from service.bundle import Bundle
    from service.registry import BundleRegistry

    champion = Bundle.load(champion_dir, with_fallback=False)
    learning = json.loads((Path(challenger_dir) / LEARNING_FILE).read_text())
    material = read_material(store_target, champion.class_names, Preprocessing.from_dict(champion.manifest["preprocessing"]))
    held = np.isin(np.asarray(material.hashes), learning["held_out_pictures"]) if material.hashes else np.zeros(0, bool)
    report = compare(champion_dir, challenger_dir, data_dir, material.x[held], material.y[held])
    write_json_atomic(Path(challenger_dir) / GATE_FILE, report)
    log(format_report(report))
    registry = BundleRegistry(store_target)
    try:
        if registry.champion() is None:
            registry.register(champion.version, str(Path(champion_dir).resolve()), gate={"passed": True, "reasons": [],
                                                                                          "first": True})
            registry.promote(champion.version)
        registry.register(report["challenger"], str(Path(challenger_dir).resolve()), parent=report["champion"], gate=report)
        if promote and report["passed"]:
            registry.promote(report["challenger"])
            log(f"[gate] promoted {report['challenger']}")
    finally:
        registry.close()
    if mlflow_folder is not None:
        from pipeline.tracking import log_gate_runs

        log_gate_runs(report, champion_dir, challenger_dir, promote and report["passed"], mlflow_folder)
    return report


def main(argv=None):
    import argparse

    from pipeline.data_dir import resolve_data_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--champion", default="assets")
    parser.add_argument("--challenger", required=True)
    parser.add_argument("--corrections", default="state/corrections.sqlite", help="the store the learning pictures came from")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--promote", action="store_true", help="promote the challenger if it passes")
    parser.add_argument("--mlflow", nargs="?", const=".", default=None, metavar="FOLDER", help=MLFLOW_HELP)
    args = parser.parse_args(argv)
    report = check_and_register(args.champion, args.challenger, args.corrections, resolve_data_dir(args.data_dir),
                                args.promote, args.mlflow)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
