"""The server's LiteRT model against the float32 Keras model it was exported from, on the same
bundle: probabilities, CIFAR-10 accuracy, the OOD detector's verdicts, the answer rule's decisions
and the gallery, on the 10,800 test pictures and the 500 shared photos.

    python -m bench.export_parity [--assets assets] [--data-dir DIR]

Both sides go through the same downstream parts (the bundle's temperature, detector, rule with the
same fallback masses, gallery); only the CNN's runtime differs.
"""

import argparse
from dataclasses import replace

import numpy as np

from bench.app_server import REPO


def main():
    import keras

    from bench.dev import data_folder
    from bundle.embedding import embed, with_temperature
    from bundle.files import MODEL_FILE
    from bundle.images import open_image
    from classifier.dataset import prepare_dataset
    from classifier.evaluate import cifar10_accuracy
    from classifier.export import keras_outputs
    from classifier.ood_sets import imagenet_photo_paths
    from pipeline.bundle_files import recorded_data_config
    from service.bundle import Bundle
    from similarity import gallery_for

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", default=str(REPO / "assets"))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    data_dir = data_folder(args.data_dir)
    bundle = Bundle.load(args.assets)
    model = keras_outputs(keras.saving.load_model(bundle.directory / MODEL_FILE, compile=False))
    temperature = bundle.manifest.get("temperature", 1.0)
    dataset = prepare_dataset(replace(recorded_data_config(bundle.directory), data_dir=str(data_dir)))
    photos = [open_image(path, draft_side=1024) for path in imagenet_photo_paths(data_dir, "all")]
    sets = {"test split": dataset.x_test, "500 photos": bundle.preprocess(photos)}
    masses = {"test split": None, "500 photos": bundle.fallback.class_masses(photos)}
    for name, x in sets.items():
        served = bundle.embed(x)
        keras_side = with_temperature(embed(model, x), temperature)
        difference = np.abs(served.probabilities - keras_side.probabilities).max()
        line = f"{name} ({len(x)}): probabilities differ by at most {difference:.2e}; top class the same for " \
               f"{np.mean(served.probabilities.argmax(1) == keras_side.probabilities.argmax(1)):.2%}"
        if name == "test split":
            names = dataset.class_names
            key = "cifar10_test_accuracy_10_class"
            line += (f"; CIFAR-10 10-class accuracy LiteRT {cifar10_accuracy(served.probabilities, dataset.y_test, names)[key]:.4f}, "
                     f"Keras {cifar10_accuracy(keras_side.probabilities, dataset.y_test, names)[key]:.4f}")
        detector, rule = bundle.ood_detector, bundle.answer_rule
        verdicts = [detector.predict(getattr(e, detector.reads), e.probabilities.argmax(1)) for e in (served, keras_side)]
        line += f"; OOD verdicts the same for {np.mean(verdicts[0] == verdicts[1]):.2%}"
        thumbnail = name == "test split"
        same_decision = same_gallery = 0
        for row in range(len(x)):
            decisions = [rule.decide(e.probabilities[row], v[row] == 1,
                                     None if masses[name] is None else (lambda row=row: masses[name][row]), thumbnail=thumbnail)
                         for e, v in zip((served, keras_side), verdicts)]
            same_decision += decisions[0].class_index == decisions[1].class_index and decisions[0].answered_by == decisions[1].answered_by
            galleries = [[n.index for n in gallery_for(bundle.gallery, e.probabilities[row], e.features[row])] for e in (served, keras_side)]
            same_gallery += galleries[0] == galleries[1]
        print(line + f"; decisions the same for {same_decision / len(x):.2%}, galleries for {same_gallery / len(x):.2%}", flush=True)


if __name__ == "__main__":
    main()
