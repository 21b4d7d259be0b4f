"""Load bench: N concurrent clients x M uploads of real photos against the real app.

    python -m bench.app_load [--assets assets] [--clients 8] [--uploads 200] [--floor]

Prints the start-up time, errors, and p50/p95 latency overall and for CNN-answered uploads.
Photos: CIFAR-10 test images (32x32 thumbnails: the CNN answers or refuses them alone) and
ImageNet sample photos (the fallback is consulted), alternating. --floor repeats the load against
a Gradio app that does nothing, to show how much of the latency is Gradio's.
"""

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.app_server import running_app
from classifier.readers import load_image_folder
from pipeline.data_dir import resolve_data_dir

SHARED_DATA = Path(resolve_data_dir())


def photos(folder, count):
    x, _, _ = load_image_folder(SHARED_DATA / "cifar10-jpeg.tgz", "cifar10/test", limit_per_class=count // 20 + 1)
    paths = []
    for index, image in enumerate(x[: count // 2]):
        path = Path(folder) / f"cifar{index}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    paths += sorted((SHARED_DATA / "imagenet-samples").glob("*.JPEG"))[: count - len(paths)]
    return paths


def load(url, paths, clients, uploads):
    """`clients` threads, each with its own gradio_client, `uploads` photos each.
    Returns ([(seconds, ok, verdict)], wall seconds)."""
    from gradio_client import Client, handle_file

    results, lock = [], threading.Lock()

    def client_loop(offset):
        # Like a browser that has not yet fetched the gallery thumbnails: the bench times
        # the answer, not the 4 image downloads that follow it.
        client = Client(url, verbose=False, download_files=False)
        for i in range(uploads):
            path = paths[(offset * 37 + i) % len(paths)]
            began = time.perf_counter()
            try:
                verdict = client.predict(handle_file(str(path)), api_name="/classify")
                verdict = verdict[0] if isinstance(verdict, (list, tuple)) else verdict
                ok = not verdict.startswith("### ⚠️")
            except Exception as error:  # counted, not raised: the bench reports errors
                verdict, ok = repr(error), False
            with lock:
                results.append((time.perf_counter() - began, ok, verdict))

    began = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - began


def one_at_a_time(url, paths):
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=False)
    alone = []
    for path in paths[:40]:
        began = time.perf_counter()
        client.predict(handle_file(str(path)), api_name="/classify")
        alone.append((time.perf_counter() - began) * 1000)
    print(f"one client, one upload at a time: p50 {np.percentile(alone, 50):.0f} ms, p95 {np.percentile(alone, 95):.0f} ms")


def report(results, wall, clients, uploads):
    latencies = np.array([r[0] for r in results]) * 1000
    errors = sum(not r[1] for r in results)
    print(f"{clients} clients x {uploads} uploads = {len(results)} requests in {wall:.1f} s "
          f"({len(results) / wall:.1f} uploads/s), errors: {errors}")
    print(f"all uploads:       p50 {np.percentile(latencies, 50):.0f} ms, p95 {np.percentile(latencies, 95):.0f} ms")
    cnn = np.array([r[0] for r in results if r[1] and "fallback" not in r[2] and "Sorry" not in r[2] and "done" not in r[2]]) * 1000
    if len(cnn):
        print(f"CNN-answered ({len(cnn)}): p50 {np.percentile(cnn, 50):.0f} ms, p95 {np.percentile(cnn, 95):.0f} ms")
    if errors:
        print("first error:", next(r[2] for r in results if not r[1])[:300])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=200, help="per client")
    parser.add_argument("--floor", action="store_true", help="then the same load on a do-nothing Gradio app (bench.gradio_floor)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        paths = photos(scratch, 200)
        # No per-client limits: the bench is one client sending many pictures (its figures are
        # the server's throughput, not a visitor's allowance).
        with running_app(args.assets, Path(scratch) / "state", extra_args=("--rate-limit", "0")) as (url, startup):
            print(f"app start-up: {startup:.1f} s")
            one_at_a_time(url, paths)
            report(*load(url, paths, args.clients, args.uploads), args.clients, args.uploads)
        if args.floor:
            print("\nthe same against a Gradio app whose handler does nothing (python -m bench.gradio_floor):")
            command = [sys.executable, "-m", "bench.gradio_floor"]
            with running_app(None, Path(scratch) / "floor", command=command) as (url, _):
                one_at_a_time(url, paths)
                report(*load(url, paths, args.clients, args.uploads), args.clients, args.uploads)
    print("one upload without HTTP or queueing: python -m bench.predict_latency")


if __name__ == "__main__":
    main()
