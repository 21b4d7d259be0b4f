"""Does the page tell one story? Drives the running app's /classify API, as a visitor's browser
would, and checks that the verdict, the bars and the gallery agree.

    python -m bench.answer_coherence [--assets assets] [--data-dir DIR] [--per-class 100]

Pictures: the data folder's 500 ImageNet photos (their wnid gives the true class through the
WordNet label map, or "none of ours") and 100 test pictures of each of our 13 classes (CIFAR-10
and the extra classes' test split, sent as PNG files). Prints, per set:
- top bar = verdict: share of answered uploads whose top bar is the verdict's class (goal 100%);
- first gallery picture = answer: share of answered uploads (goal 100%);
- gallery holds the true class: share of pictures of our classes (goals: photos >= 95%, test >= 96%);
- right / refused: the full system's accuracy on pictures of our classes, refusal of the others.
"""

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.app_server import running_app

VERDICT = re.compile(r"This looks like: (.+?) \(")


def pictures(data_dir, per_class, folder):
    """[(path, true class name or None, set name)] for the photos and the test pictures."""
    from PIL import Image

    from classifier.dataset import DataConfig, prepare_dataset
    from classifier.label_map import build_label_map
    from bundle.labels import CLASS_NAMES
    from classifier.wordnet import read_wordnet
    from classifier.ood_sets import photo_wnid

    wordnet = Path(data_dir) / "wordnet"
    label_map = build_label_map(wordnet)
    position = {wnid: index for index, wnid in enumerate(read_wordnet(wordnet).imagenet_wnids)}
    items = []
    for path in sorted((Path(data_dir) / "imagenet-samples").glob("*.JPEG")):
        target = label_map[position[photo_wnid(path)]]
        items.append((path, None if target is None else CLASS_NAMES[target], "photos"))
    dataset = prepare_dataset(DataConfig(data_dir=str(data_dir), limit_per_class=per_class))
    for index, (image, label) in enumerate(zip(dataset.x_test, dataset.y_test)):
        path = Path(folder) / f"test_{index:05d}.png"
        Image.fromarray(image).save(path)
        items.append((path, dataset.class_names[label], "test"))
    return items


def ask(client, path):
    from gradio_client import handle_file

    verdict, shares, gallery, _hood, _note = client.predict(handle_file(str(path)), api_name="/classify")
    match = VERDICT.search(verdict or "")
    answer = match.group(1).replace(" ", "_") if match else None
    top = shares.get("label").replace(" ", "_") if shares and shares.get("label") else None
    classes = [(item.get("caption") or "").replace(" ", "_") for item in gallery or []]
    return answer, top, classes


def measure(url, items):
    from gradio_client import Client

    client = Client(url, verbose=False)
    rows, started = [], time.perf_counter()
    for path, truth, group in items:
        answer, top, classes = ask(client, path)
        rows.append({"group": group, "truth": truth, "answer": answer, "top": top, "gallery": classes})
    return rows, time.perf_counter() - started


def report(rows):
    for group in ("photos", "test"):
        part = [r for r in rows if r["group"] == group]
        answered = [r for r in part if r["answer"] is not None]
        ours = [r for r in part if r["truth"] is not None]
        others = [r for r in part if r["truth"] is None]
        print(f"{group}: {len(part)} pictures ({len(ours)} of our classes, {len(others)} of other classes), {len(answered)} answered")
        print(f"  top bar = verdict class:        {_share(answered, lambda r: r['top'] == r['answer'])}")
        print(f"  first gallery picture = answer: {_share(answered, lambda r: r['gallery'][:1] == [r['answer']])}")
        print(f"  gallery holds the true class:   {_share(ours, lambda r: r['truth'] in r['gallery'])}")
        print(f"  right (of our classes):         {_share(ours, lambda r: r['answer'] == r['truth'])}")
        if others:
            print(f"  refused (of other classes):     {_share(others, lambda r: r['answer'] is None)}")


def _share(rows, test):
    if not rows:
        return "n/a"
    hits = sum(bool(test(r)) for r in rows)
    return f"{hits / len(rows):.1%} ({hits} of {len(rows)})"


def main():
    from pipeline.data_dir import resolve_data_dir

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--per-class", type=int, default=100, help="test pictures per class")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        items = pictures(resolve_data_dir(args.data_dir), args.per_class, folder)
        with running_app(args.assets, Path(folder) / "state", extra_args=("--rate-limit", "0")) as (url, _):
            rows, seconds = measure(url, items)
    print(f"{len(rows)} uploads through {url}classify in {seconds:.0f} s")
    report(rows)
    return rows


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
