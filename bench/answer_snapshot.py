"""Every answer of the service on real pictures, written as JSON, and two such files compared.

    python -m bench.answer_snapshot --out /tmp/after.json [--gallery-from cnn]
    python -m bench.answer_snapshot --compare /tmp/before.json /tmp/after.json

The pictures: the 500 ImageNet photos of the data folder and the whole test split the bundle
was built on (10,800 pictures: CIFAR-10's and the extra classes'), fed to the service one by
one as an upload would be. For each: the verdict line, the class, the stage that answered, and
the gallery (class and gallery row of each picture). --compare prints how many items differ in
each. Give both runs the same --test-pictures (an .npz of x_test) when the data code changed
between them.
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def snapshot(assets, data_dir, gallery_from, limit=None, test_pictures=None):
    from classifier.dataset import prepare_dataset
    from service.bundle import Bundle
    from pipeline.bundle_files import recorded_data_config
    from service.predictor import Predictor, PredictorConfig

    bundle = Bundle.load(assets)
    predictor = Predictor(bundle, config=PredictorConfig(gallery_from=gallery_from))
    photos = sorted((Path(data_dir) / "imagenet-samples").glob("*.JPEG"))[:limit]
    if test_pictures is not None:
        with np.load(test_pictures) as stored:
            x_test = stored["x_test"]
    else:
        config = recorded_data_config(assets)
        x_test = prepare_dataset(replace(config, data_dir=data_dir) if config.data_dir else config).x_test
    items = [(path.name, str(path)) for path in photos]
    items += [(f"test/{index}", picture) for index, picture in enumerate(x_test[:limit])]
    out, started = {}, time.perf_counter()
    for name, source in items:
        p = predictor.predict(source)
        out[name] = {"message": p.message, "label": p.label, "answered_by": p.answered_by,
                     "gallery": [[n.class_name, int(n.index)] for n in p.gallery]}
    print(f"{len(out)} pictures in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


def compare(before, after):
    keys = sorted(set(before) | set(after))
    missing = [k for k in keys if k not in before or k not in after]
    common = [k for k in keys if k in before and k in after]
    print(f"pictures: {len(common)} in both, {len(missing)} in only one")
    for field in ("message", "label", "answered_by", "gallery"):
        differ = [k for k in common if before[k][field] != after[k][field]]
        print(f"{field}: {len(common) - len(differ)} identical, {len(differ)} differ" + (f" (first: {differ[:3]})" if differ else ""))
    return not missing and all(before[k] == after[k] for k in common)


def main():
    from pipeline.data_dir import resolve_data_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--gallery-from", default="answer", choices=("answer", "cnn"))
    parser.add_argument("--limit", type=int, default=None, help="at most this many photos and test pictures (a quick look)")
    parser.add_argument("--test-pictures", default=None, help="an .npz whose x_test are the test pictures (the same for both runs)")
    parser.add_argument("--out")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        before, after = (json.loads(open(path).read()) for path in args.compare)
        sys.exit(0 if compare(before, after) else 1)
    result = snapshot(args.assets, resolve_data_dir(args.data_dir), args.gallery_from, args.limit, args.test_pictures)
    with open(args.out, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
