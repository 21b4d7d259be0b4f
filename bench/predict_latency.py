"""Latency and memory of one prediction through the service layer (no HTTP), on real photos.

    python -m bench.predict_latency [--assets assets [OTHER_BUNDLE ...]] [--repeats 3] [--data-dir DIR] [--compare]

With several bundles, each is measured on the same photos in turn, in one run, so that their
figures compare (the test-time views of a bundle cost what the difference says). Splits
CNN-answered uploads from those where the ImageNet fallback was consulted. --compare also
measures each bundle with the fallback started only when the answer rule asks for it (as before
it ran beside the CNN), the two in turn photo by photo.
"""

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from pipeline.data_dir import resolve_data_dir


def measure(assets, paths, repeats, compare=False):
    from monitoring import PredictionLog
    from service.bundle import Bundle
    from service.predictor import Predictor, PredictorConfig

    began = time.perf_counter()
    bundle = Bundle.load(assets)
    print(f"{assets}: bundle load {time.perf_counter() - began:.1f} s")
    configs = {"fallback beside the CNN": PredictorConfig()}
    if compare:
        configs["fallback when asked"] = PredictorConfig(fallback_alongside=False)
    with tempfile.TemporaryDirectory() as state:
        predictors = {name: Predictor(bundle, log=PredictionLog(f"{state}/log-{index}.sqlite"), config=config)
                      for index, (name, config) in enumerate(configs.items())}
        timings = {name: {"all": [], "cnn only": [], "fallback consulted": []} for name in predictors}
        for predictor in predictors.values():
            predictor.predict(paths[0])  # warm-up: first calls build the graph and the interpreter
        for _ in range(repeats):
            for path in paths:
                for name, predictor in predictors.items():
                    began = time.perf_counter()
                    prediction = predictor.predict(path)
                    elapsed = (time.perf_counter() - began) * 1000
                    timings[name]["all"].append(elapsed)
                    timings[name]["cnn only" if prediction.imagenet_top is None else "fallback consulted"].append(elapsed)
    for name, kinds in timings.items():
        print(f"  {name}:")
        for kind, values in kinds.items():
            if values:
                print(f"  {kind:>21}: {len(values)} uploads, p50 {np.percentile(values, 50):.1f} ms, p95 {np.percentile(values, 95):.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", nargs="+", default=["assets"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--compare", action="store_true", help="also with the fallback started only when the rule asks")
    args = parser.parse_args()
    paths = sorted((Path(resolve_data_dir(args.data_dir)) / "imagenet-samples").glob("*.JPEG"))
    if not paths:
        raise SystemExit(f"No photos in {resolve_data_dir(args.data_dir)}/imagenet-samples (give --data-dir).")
    for assets in args.assets:
        measure(assets, paths, args.repeats, args.compare)
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
