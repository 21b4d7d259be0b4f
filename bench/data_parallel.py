"""Data-parallel training check: airbench94's recipe for a few steps on 1 device and on N, from
the same seed and the same batches; prints the largest weight difference and each one's time.

    python -m bench.data_parallel [--devices 2] [--steps 8] [--batch 128]

On a machine without accelerators it makes N virtual CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=N), which checks the arithmetic, not the
speed: the N "devices" share the same cores. Where a GPU machine is lent, run it there to time
1 device against all of them. Each run is a subprocess with KERAS_BACKEND=jax (Keras' distribution
API trains on JAX). The pictures are the committed gallery's real CIFAR training thumbnails
(assets/gallery.npz), so it runs on a fresh clone. The comparison runs in float32: bfloat16
rounding would turn the order of sums into visible differences that say nothing about
correctness.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def pictures(count):
    from similarity import NearestTrainingImages

    gallery = NearestTrainingImages.load(REPO / "assets" / "gallery.npz")
    rows = np.random.default_rng(0).permutation(len(gallery.labels_))[:count]
    return gallery.thumbnails_[rows], np.asarray(gallery.labels_[rows], dtype=np.int64), tuple(gallery.class_names)


def worker(devices, steps, batch, out):
    """One training run (in its own process): saves the weights and the seconds per step."""
    import keras

    from classifier.airbench import fit
    from classifier.airbench_config import AirbenchConfig
    from classifier.dataset import Dataset
    from classifier.devices import data_parallel

    x, y, names = pictures(steps * batch + 2 * batch)
    dataset = Dataset(x[:steps * batch], y[:steps * batch], x[-2 * batch:], y[-2 * batch:], x[:0], y[:0], names)
    config = replace(AirbenchConfig(), batch_size=batch, whiten_images=steps * batch, precision="float32")
    with data_parallel(devices) as used:
        started = time.perf_counter()
        model, _ = fit(config, dataset, epochs=1, out_dir=None, seed=0, verbose=0)
        seconds = time.perf_counter() - started
    weights = {f"w{i}": np.asarray(keras.ops.convert_to_numpy(w), np.float32) for i, w in enumerate(model.weights)}
    np.savez(out, **weights)
    Path(str(out) + ".json").write_text(json.dumps({"devices": used, "seconds": seconds, "steps": steps}))


def run(devices, steps, batch, out, virtual):
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO),
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={virtual}", "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")}
    command = [sys.executable, "-m", "bench.data_parallel", "--worker", str(devices), "--steps", str(steps),
               "--batch", str(batch), "--out", str(out)]
    subprocess.run(command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return dict(np.load(out)), json.loads(Path(str(out) + ".json").read_text())


def compare(devices=2, steps=8, batch=128):
    """(largest absolute weight difference, largest weight, [run facts for 1 and N devices])."""
    with tempfile.TemporaryDirectory() as work:
        one, one_facts = run(1, steps, batch, Path(work) / "one.npz", devices)
        many, many_facts = run(devices, steps, batch, Path(work) / "many.npz", devices)
    difference = max(float(np.abs(one[k] - many[k]).max()) for k in one)
    largest = max(float(np.abs(one[k]).max()) for k in one)
    return difference, largest, [one_facts, many_facts]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return worker(args.worker, args.steps, args.batch, args.out)
    difference, largest, facts = compare(args.devices, args.steps, args.batch)
    for fact in facts:
        print(f"{len(fact['devices'])} device(s) {fact['devices']}: {fact['steps']} steps in {fact['seconds']:.1f} s "
              f"({fact['seconds'] / fact['steps']:.2f} s a step, compilation included)")
    print(f"largest weight difference, 1 vs {args.devices} devices: {difference:.2e} (largest weight {largest:.2f}); "
          f"tolerance 1e-4")


if __name__ == "__main__":
    main()
