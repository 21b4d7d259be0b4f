"""Latency and memory of one prediction through the service layer (no HTTP), on real photos.

    python -m bench.predict_latency [--assets assets] [--repeats 3]

Splits CNN-answered uploads from those where the ImageNet fallback was consulted.
"""

import argparse
import resource
import tempfile
import time

import numpy as np

from classifier.bundle import Bundle
from classifier.data import SHARED_DATA


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from monitoring import PredictionLog
    from service.predictor import Predictor

    began = time.perf_counter()
    bundle = Bundle.load(args.assets)
    print(f"bundle load: {time.perf_counter() - began:.1f} s")
    paths = sorted((SHARED_DATA / "imagenet-samples").glob("*.JPEG"))
    with tempfile.TemporaryDirectory() as state:
        predictor = Predictor(bundle, log=PredictionLog(f"{state}/log.sqlite"))
        predictor.predict(paths[0])  # warm-up: first calls build the graph and the interpreter
        timings = {"cnn": [], "fallback consulted": []}
        for _ in range(args.repeats):
            for path in paths:
                began = time.perf_counter()
                prediction = predictor.predict(path)
                elapsed = (time.perf_counter() - began) * 1000
                timings["cnn" if prediction.imagenet_top is None else "fallback consulted"].append(elapsed)
    for kind, values in timings.items():
        if values:
            print(f"{kind:>19}: {len(values)} uploads, p50 {np.percentile(values, 50):.1f} ms, p95 {np.percentile(values, 95):.1f} ms")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
