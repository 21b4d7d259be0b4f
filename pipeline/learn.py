"""The learning step: the champion's CNN fine-tuned on the reviewed learning pictures, exported,
and everything that reads its features refitted; a new bundle version beside the champion.

    python -m pipeline.learn [--bundle assets] [--corrections state/corrections.sqlite] [--out state/bundles]
                             [--data-dir DIR] [--gate] [--promote] [--mlflow [FOLDER]]
    version_dir = learn(champion_dir, material, out_root, data_dir, LearnConfig())

The learning pictures are the corrections store's accepted votes (service.corrections: visitors'
labels and the ImageNet fallback's sure answers), one per picture. A fixed fraction of them, chosen
by their hash (so the same picture is always on the same side), is held out for the gate
(pipeline.gate), never trained on. Then, in minutes on a CPU:
1. the CNN is fine-tuned on the rest with a replay of the training split (classifier.fine_tune);
2. it is exported (model.keras, model.tflite) into a new folder, a copy of the champion's;
3. its temperature is refitted on the validation split;
4. the build's own stages refit what reads the features: the OOD detector (the champion's kind,
   with its settings, without the build's table of every candidate), the gallery (the learning
   pictures join it), the monitoring reference, and the answer rule's thresholds
   (pipeline.fallback_stage's tuning, without its measuring pass). The gate measures the result. They see a class-balanced
   sample of the training split (`train_per_class`) with the learning pictures, and the whole
   validation and test splits.
The folder gets learning.json (the config, each source's counts, the pictures' hashes, the
champion it came from) and the manifest names its version. The error-analysis figures are the
champion's until `python -m pipeline.errors_stage --assets DIR` redraws them; they are removed.
"""

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from bundle.atomic import write_json_atomic
from bundle.files import MANIFEST
from classifier.fine_tune import FineTuneConfig
from pipeline.gate import MLFLOW_HELP, check_and_register
from pipeline.learning_material import LEARNING_FILE, is_held_out, read_material

STALE_FIGURES = ("errors_kmeans.png", "errors_dbscan.png", "activations.png")


@dataclass(frozen=True)
class LearnConfig:
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    held_out_fraction: float = 0.2  # of the learning pictures, by hash: the gate's, never trained on
    # Random crops of each learning picture (at least half of it), taken from the stored copy before
    # it is resized: its repeats in an epoch are different views, not the same 32 pixels again.
    crops: int = 4
    max_new_pictures: int = 2000  # beyond it, the pictures first by hash (a fixed choice, not the newest)
    train_per_class: int = 400  # original training pictures per class the refitted stages see
    stages: tuple = ("ood", "gallery", "monitoring", "fallback")
    seed: int = 0


def learn(champion_dir, material, out_root, data_dir, config=LearnConfig(), log=print):
    """Write a new bundle version under out_root from the champion folder; returns its folder."""
    import keras

    from bundle.embedding import with_temperature
    from classifier.calibration import fit_temperature
    from classifier.dataset import prepare_dataset
    from classifier.evaluate import evaluate
    from classifier.fine_tune import fine_tune
    from pipeline.bundle_files import export_model, recorded_data_config
    from pipeline.context import BuildContext
    from service.bundle import Bundle

    started = time.perf_counter()
    champion_dir = Path(champion_dir)
    champion = Bundle.load(champion_dir, with_fallback=False)
    held = np.array([is_held_out(h, config.held_out_fraction) for h in material.hashes], bool)
    train_part = material.subset(~held)
    if len(train_part.y) == 0:
        raise ValueError("No accepted learning pictures to learn from (review the queue first).")
    data_config = replace(recorded_data_config(champion_dir), data_dir=str(data_dir))
    dataset = prepare_dataset(data_config)
    log(f"[learn] {len(train_part.y)} pictures to learn from, {int(held.sum())} held out for the gate; "
        f"champion {champion.version}")
    model = keras.saving.load_model(champion_dir / champion.manifest["keras_model"], compile=False)
    loaded = time.perf_counter() - started
    model, report = fine_tune(model, train_part.x, train_part.y, dataset, config.fine_tune)
    log(f"[learn] fine-tuned in {report['seconds']:.0f} s")
    exported = time.perf_counter()

    identity = {"champion": champion.version, "pictures": sorted(train_part.hashes), "config": asdict(config)}
    version = time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + hashlib.sha256(
        json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    work = Path(out_root) / f"{version}.building"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(champion_dir, work, ignore=shutil.ignore_patterns("reports", *STALE_FIGURES))
    model = export_model(model, work)
    manifest = json.loads((work / MANIFEST).read_text())
    manifest.update(version=version, parent=champion.version)
    manifest.pop("temperature", None)
    write_json_atomic(work / MANIFEST, manifest)
    val = Bundle.load(work, with_fallback=False).embed(dataset.x_val)  # uncalibrated: no temperature yet
    manifest["temperature"], calibration = fit_temperature(val.logits, dataset.y_val)
    write_json_atomic(work / MANIFEST, manifest)

    refit = _refit_dataset(dataset, train_part.x[:, 0] if train_part.x.ndim == 5 else train_part.x, train_part.y, config)
    bundle = Bundle.load(work, with_fallback=False)
    embeddings = {"train": bundle.embed(refit.x_train), "val": with_temperature(val, manifest["temperature"]),
                  "test": bundle.embed(refit.x_test)}
    metrics = json.loads((champion_dir / "metrics.json").read_text())
    metrics.pop("errors", None)
    metrics.update(classifier=evaluate(embeddings["test"], refit, {}, work), calibration=calibration)
    context = BuildContext(bundle, refit, embeddings, work, data_config, str(data_dir), model)
    seconds = {"load": loaded, "fine_tune": report["seconds"], "export_and_embed": time.perf_counter() - exported}
    for stage, stage_config in _stage_configs(champion_dir, metrics, config.stages, len(refit.y_train) - len(train_part.y)):
        stage_started = time.perf_counter()
        metrics[stage] = stage_config[0].run(context, *stage_config[1:])
        seconds[stage] = time.perf_counter() - stage_started
        log(f"[learn] refitted {stage} in {seconds[stage]:.0f} s")
    learning = {
        "version": version, "parent": champion.version, "config": asdict(config), "fine_tune": report,
        "learnt_from": train_part.counts(bundle.class_names), "held_out": material.subset(held).counts(bundle.class_names),
        "pictures": list(train_part.hashes), "held_out_pictures": list(material.subset(held).hashes),
        "seconds": time.perf_counter() - started, "seconds_by_part": seconds,
    }
    metrics["learning"] = {k: v for k, v in learning.items() if not k.endswith("pictures")}
    write_json_atomic(work / "metrics.json", metrics)
    write_json_atomic(work / LEARNING_FILE, learning)
    target = Path(out_root) / version
    work.rename(target)
    log(f"[learn] version {version} written to {target} in {learning['seconds']:.0f} s")
    return target


def _refit_dataset(dataset, new_x, new_y, config):
    """The split the refitted stages see: a class-balanced sample of the original training
    pictures with the learning pictures, and the whole validation and test splits."""
    from bundle.arrays import balanced_sample

    original = None if dataset.train_augmented is None else ~np.asarray(dataset.train_augmented, bool)
    rows = balanced_sample(dataset.y_train, config.train_per_class, original, config.seed)
    return replace(dataset, x_train=np.concatenate([dataset.x_train[rows], new_x]),
                   y_train=np.concatenate([dataset.y_train[rows], new_y]),
                   train_augmented=np.zeros(len(rows) + len(new_y), bool), x_outliers=None)


def _stage_configs(champion_dir, metrics, stages, original_rows):
    """[(stage, (module, config))] for each refitted stage, with the settings the champion was built
    with (its config.json, its ood_config.json) and its OOD detector's kind: the table of every
    candidate is the build's choice, not the learning step's."""
    from pipeline import fallback_stage, gallery_stage, monitoring_stage, ood_stage
    from service.answer import AnswerRule

    modules = {"ood": ood_stage, "gallery": gallery_stage, "monitoring": monitoring_stage, "fallback": fallback_stage}
    classes = {"ood": ood_stage.OODConfig, "gallery": gallery_stage.GalleryConfig, "fallback": fallback_stage.FallbackConfig}
    recorded = dict(json.loads((Path(champion_dir) / "config.json").read_text()).get("stage_configs", []))
    ood_file = Path(champion_dir) / "ood_config.json"
    if ood_file.exists():
        recorded["ood"] = json.loads(ood_file.read_text())
    out = []
    for stage in stages:
        if stage not in recorded or stage not in classes:
            out.append((stage, (modules[stage],)))
            continue
        known = classes[stage].__dataclass_fields__
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in recorded[stage].items() if k in known}
        if isinstance(values.get("rule"), dict):
            values["rule"] = AnswerRule.from_dict(values["rule"])
        config = classes[stage](**values)
        chosen = metrics.get("ood", {}).get("chosen")
        if stage == "ood" and chosen:
            out.append((stage, (_OODRefit(original_rows), replace(config, methods=(chosen,), default_method=chosen))))
            continue
        if stage == "fallback":
            config = replace(config, measure=False)
        out.append((stage, (modules[stage], config)))
    return out


class _OODRefit:
    """The OOD stage as the learning step runs it (ood_stage.refit): the detector refitted on the
    original training pictures alone, no table. Uploads in the detector's bank bring every picture
    like them closer to "known": with Tiny ImageNet pictures of our classes in it, the near-OOD
    AUROC on Tiny ImageNet's other classes fell from 0.970 to 0.948; without, to 0.952 (the rest
    is the fine-tuned features themselves; bench.learning_loop)."""

    def __init__(self, original_rows):
        self.original_rows = original_rows

    def run(self, context, config):
        from pipeline.ood_stage import refit

        rows = slice(0, self.original_rows)
        dataset = replace(context.dataset, x_train=context.dataset.x_train[rows], y_train=context.dataset.y_train[rows],
                                 train_augmented=context.dataset.train_augmented[rows])
        train = context.embeddings["train"]
        embeddings = {**context.embeddings, "train": type(train)(train.features[rows], train.logits[rows],
                                                                 train.probabilities[rows], train.ood_features[rows])}
        return refit(replace(context, dataset=dataset, embeddings=embeddings), config)


def main(argv=None):
    import argparse

    from bundle.images import Preprocessing
    from pipeline.data_dir import resolve_data_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="assets", help="the champion's folder")
    parser.add_argument("--corrections", default="state/corrections.sqlite", help="the app's store (or its postgresql:// URL)")
    parser.add_argument("--out", default="state/bundles", help="where new versions are written")
    parser.add_argument("--data-dir", default=None, help="the data folder (default $HONEST_DATA_DIR, else ../shared/data)")
    parser.add_argument("--gate", action="store_true", help="then check the new version against the champion (pipeline.gate)")
    parser.add_argument("--promote", action="store_true", help="then promote it if the gate passes (implies --gate)")
    parser.add_argument("--mlflow", nargs="?", const=".", default=None, metavar="FOLDER", help=MLFLOW_HELP + " (implies --gate)")
    args = parser.parse_args(argv)
    manifest = json.loads((Path(args.bundle) / MANIFEST).read_text())
    config = LearnConfig()
    material = read_material(args.corrections, tuple(manifest["class_names"]), Preprocessing.from_dict(manifest["preprocessing"]),
                             config.max_new_pictures, config.crops, config.seed)
    data_dir = resolve_data_dir(args.data_dir)
    version_dir = learn(args.bundle, material, args.out, data_dir, config)
    if args.gate or args.promote or args.mlflow:
        check_and_register(args.bundle, version_dir, args.corrections, data_dir, args.promote, args.mlflow)
    return version_dir


if __name__ == "__main__":
    main()
