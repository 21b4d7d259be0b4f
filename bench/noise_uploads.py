"""What the app says to pictures of pure noise (TV static), by size, through the service layer.

    python -m bench.noise_uploads [--assets assets] [--per-size 50]

Counts, for uniform-noise uploads of each size, how many were answered (and by whom) and how many
refused, and by which rule: the noise gate (ood.noise), or the CNN, OOD detector and fallback.
Run it with a bundle built before the noise gate to see what the gate changes.
"""

import argparse
from collections import Counter

import numpy as np
from PIL import Image

from service.bundle import Bundle


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--per-size", type=int, default=50)
    parser.add_argument("--sizes", default="8,16,32,48,64,256,1024")
    parser.add_argument("--seed", type=int, default=123)
    args = parser.parse_args()
    from service.predictor import Predictor

    bundle = Bundle.load(args.assets)
    predictor = Predictor(bundle)
    gate = bundle.noise_gate
    print("noise gate:", "none in this bundle" if gate is None else
          f"threshold {gate.threshold_:.3f} (least correlated training picture {gate.natural_min_:.3f}, "
          f"most correlated fitted noise {gate.noise_max_:.3f})")
    rng = np.random.default_rng(args.seed)
    print(f"{'size':>6} {'answered':>9} {'refused: noise gate':>20} {'refused: other rules':>21}  answers")
    for size in (int(s) for s in args.sizes.split(",")):
        outcomes, answers = Counter(), Counter()
        for _ in range(args.per_size):
            picture = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            prediction = predictor.predict(picture)
            if prediction.answered_by != "refused":
                outcomes["answered"] += 1
                answers[f"{prediction.label} ({prediction.answered_by})"] += 1
            elif prediction.refused_by == "noise_gate":
                outcomes["gate"] += 1
            else:
                outcomes["other"] += 1
        common = ", ".join(f"{name} ×{count}" for name, count in answers.most_common(3))
        print(f"{size:>6} {outcomes['answered']:>9} {outcomes['gate']:>20} {outcomes['other']:>21}  {common}")
    print(f"made by: python -m bench.noise_uploads --assets {args.assets} --per-size {args.per_size}")


if __name__ == "__main__":
    main()
