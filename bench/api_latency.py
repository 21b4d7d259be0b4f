"""Latency of one upload through the JSON API and through the page's Gradio API, beside the
service's own time, in one run on the same photos.

    python -m bench.api_latency [--assets assets] [--photos 40] [--clients 8] [--data-dir DIR]

1. The service's own time: PublicService.classify in this process, no HTTP (what
   bench.predict_latency measures, here through the service as the API calls it).
2. The real app (python app.py --rate-limit 0) on a free localhost port, then for 1 client and for
   `--clients` concurrent clients, each sending every photo: POST /api/v1/classify with the file
   as the body (httpx), and the page's /classify endpoint (gradio_client, upload then queue).
Printed: p50/p95 per path, and the JSON API's single-client p50 over the service's own p50
(goal: <= 1.5). The photos are the data folder's imagenet-samples, else assets/examples.
"""

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.app_server import REPO, running_app
from pipeline.data_dir import resolve_data_dir


def photos(data_dir, count):
    found = sorted((Path(resolve_data_dir(data_dir)) / "imagenet-samples").glob("*.JPEG"))
    return (found or sorted((REPO / "assets" / "examples").glob("*.jpg")))[:count]


def service_times(assets, paths, state_dir):
    """Milliseconds of PublicService.classify per photo, in process, after a warm-up."""
    from app import make_service

    service, _ = make_service(assets, state_dir, 0)
    for path in paths[:3]:
        service.classify(str(path))
    times = []
    for path in paths:
        started = time.perf_counter()
        service.classify(str(path))
        times.append((time.perf_counter() - started) * 1000)
    return times


def concurrently(clients, send, paths):
    """Each of `clients` threads sends every photo (each from another place in the list, so that
    concurrent requests are different pictures); returns every request's milliseconds."""
    times, errors = [], []
    lock, start = threading.Lock(), threading.Barrier(clients)

    def run(number):
        session = send.session()
        mine = paths[number % len(paths):] + paths[:number % len(paths)]
        start.wait()
        for path in mine:
            began = time.perf_counter()
            try:
                send(session, path)
            except Exception as error:  # counted and shown, not hidden in the figures
                with lock:
                    errors.append(repr(error))
                continue
            with lock:
                times.append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        print(f"    {len(errors)} requests failed, e.g. {errors[0]}")
    return times


class JsonApi:
    def __init__(self, url):
        self.url = url + "api/v1/classify"

    def session(self):
        import httpx

        return httpx.Client(timeout=120)

    def __call__(self, session, path):
        response = session.post(self.url, content=Path(path).read_bytes(), headers={"Content-Type": "image/jpeg"})
        response.raise_for_status()
        return response.json()


class GradioApi:
    def __init__(self, url):
        self.url = url

    def session(self):
        from gradio_client import Client

        return Client(self.url, verbose=False)

    def __call__(self, session, path):
        from gradio_client import handle_file

        return session.predict(handle_file(str(path)), api_name="/classify")


def line(name, times):
    return f"  {name:<34} p50 {np.percentile(times, 50):7.1f} ms   p95 {np.percentile(times, 95):7.1f} ms   ({len(times)} requests)"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--photos", type=int, default=40)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    paths = photos(args.data_dir, args.photos)
    with tempfile.TemporaryDirectory() as folder:
        own = service_times(args.assets, paths, Path(folder) / "in-process")
        print(f"{len(paths)} photos ({paths[0].parent}); bundle {args.assets}")
        print(line("service's own time (in process)", own))
        with running_app(Path(args.assets).resolve(), Path(folder) / "server", extra_args=("--rate-limit", "0")) as (url, _):
            results = {}
            for name, send in (("JSON API", JsonApi(url)), ("page's Gradio API", GradioApi(url))):
                concurrently(1, send, paths[:3])  # warm-up: connections, the first calls in the server
                for clients in (1, args.clients):
                    results[name, clients] = concurrently(clients, send, paths)
                    print(line(f"{name}, {clients} client{'s' if clients > 1 else ''}", results[name, clients]))
    ratio = np.percentile(results["JSON API", 1], 50) / np.percentile(own, 50)
    print(f"JSON API single-client p50 / service's own p50: {ratio:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
