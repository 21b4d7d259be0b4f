"""The whole learning loop through the running app: uploads -> visitors' votes and the fallback's
sure answers -> review -> the learning step -> the gate -> promotion -> the app serves the new
version without a restart. Prints before -> after on pictures the loop never saw.

    python -m bench.learning_loop [--assets assets] [--data-dir DIR] [--vote-share 1.0] [--out DIR] [--install assets]

The stream (pictures no figure is measured on): the tune half of imagenet-samples (even positions
of the sorted file names: ours and others), and Tiny ImageNet val pictures (64 px) of the classes
that map to ours at even positions of the sorted 200 wnids (the odd ones are never trained on).
Each picture is uploaded through the JSON API by a visitor of its own. When the answer is wrong or
refused and the picture shows one of our classes, its visitor votes the true label with
probability --vote-share. The fallback's sure answers join the queue by themselves. The admin
accepts every pending picture (a reviewer who trusts the queue, so the fallback's rare mistakes
go in too). Then `python -m pipeline.learn --gate` runs as the admin's button runs it (timed), the
admin promotes the version if the gate passed, and the bench waits until the app answers with it.

The gate's table is the before -> after: the champion and the new version on the CIFAR-10 test
split, the bench half of the photos (odd positions), near-OOD classes at odd positions, and the
learning pictures held out of the step. --install copies the promoted version into a bundle
folder (its reports/ kept), as the committed assets/ were made.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from bench.app_server import REPO, running_app

SEED = 0


def stream(data_dir):
    """[(file name, bytes, our class or None)] of the loop's pictures, in a fixed shuffled order."""
    from bundle.labels import CLASS_NAMES
    from classifier.dataset import tiny_imagenet_val_of_our_classes
    from classifier.label_map import build_label_map
    from classifier.ood_sets import imagenet_photo_paths, photo_wnid
    from classifier.readers import even_odd_split, tiny_imagenet_wnids, walk_files
    from classifier.wordnet import read_wordnet
    from pipeline.answer_tuning import NONE, expected_classes

    data_dir, wordnet = Path(data_dir), Path(data_dir) / "wordnet"
    paths = imagenet_photo_paths(data_dir, "all", half="tune")
    targets = expected_classes([photo_wnid(p) for p in paths], build_label_map(wordnet), read_wordnet(wordnet).imagenet_wnids)
    items = [(p.name, p.read_bytes(), None if t == NONE else CLASS_NAMES[int(t)]) for p, t in zip(paths, targets)]
    archive = data_dir / "tiny-imagenet-subset.tgz"
    even = set(even_odd_split(tiny_imagenet_wnids(archive))[0])
    ours = {wnid: index for wnid, index in tiny_imagenet_val_of_our_classes(CLASS_NAMES, wordnet).items() if wnid in even}
    annotations, images = {}, {}
    for relative, read in walk_files(archive, "tiny-imagenet-200/val", suffixes=(".jpeg", ".txt")):
        if relative == "val_annotations.txt":
            annotations = dict(line.split("\t")[:2] for line in read().decode().splitlines())
        else:
            images[relative.split("/")[-1]] = read
    for name in sorted(images):
        if annotations.get(name) in ours:
            items.append((name, images[name](), CLASS_NAMES[ours[annotations[name]]]))
    order = np.random.default_rng(SEED).permutation(len(items))
    return [items[i] for i in order]


def post(url, path, body, headers):
    request = urllib.request.Request(url + path, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def upload_stream(url, items, vote_share):
    """Upload every picture as its own visitor; vote the truth on a share of the wrong or refused ones."""
    rng = np.random.default_rng(SEED)
    tally = {"uploads": 0, "right": 0, "wrong": 0, "refused": 0, "votes": 0, "others": 0}
    for index, (name, data, truth) in enumerate(items):
        visitor = {"X-Forwarded-For": f"198.18.{index // 250}.{index % 250 + 1}"}
        answer = post(url, "api/v1/classify", data, {"Content-Type": "image/jpeg", **visitor})
        tally["uploads"] += 1
        if truth is None:
            tally["others"] += 1
            continue
        outcome = "refused" if answer["answer"] is None else "right" if answer["answer"] == truth else "wrong"
        tally[outcome] += 1
        if outcome != "right" and rng.random() < vote_share:
            post(url, "api/v1/corrections", json.dumps({"token": answer["token"], "label": truth}).encode(),
                 {"Content-Type": "application/json", **visitor})
            tally["votes"] += 1
    return tally


def answering_version(url, data):
    return post(url, "api/v1/classify", data, {"Content-Type": "image/jpeg", "X-Forwarded-For": "198.18.99.1"})["bundle_version"]


def main():
    from bundle.labels import CLASS_NAMES
    from pipeline.data_dir import resolve_data_dir
    from pipeline.gate import format_report
    from service.corrections import CorrectionStore
    from service.registry import BundleRegistry

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--vote-share", type=float, default=1.0, help="share of wrong or refused answers whose visitor votes")
    parser.add_argument("--out", default=None, help="the app's state and the new versions (default: a temporary folder)")
    parser.add_argument("--install", default=None, help="copy the promoted version into this bundle folder")
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)
    work = Path(args.out or tempfile.mkdtemp(prefix="learning-loop-"))
    state = work / "state"
    items = stream(data_dir)
    print(f"stream: {len(items)} pictures ({sum(t is not None for _, _, t in items)} of our classes)", flush=True)
    os.environ.setdefault("HONEST_ADMIN_PASSWORD", hashlib.sha256(os.urandom(16)).hexdigest())
    with running_app(Path(args.assets).resolve(), state, extra_args=("--rate-limit", "0", "--data-dir", data_dir)) as (url, _):
        started = time.perf_counter()
        tally = upload_stream(url, items, args.vote_share)
        print(f"uploads: {tally} in {time.perf_counter() - started:.0f} s", flush=True)
        store = CorrectionStore(state / "corrections.sqlite", CLASS_NAMES)
        pending = [vote.id for vote in store.votes("pending")]
        by_source = {source: store.counts(source)["pending"] for source in ("visitor", "fallback")}
        store.review_many(pending, accept=True, reviewer="bench")
        store.close()
        print(f"review: accepted {len(pending)} pending pictures, by source {by_source}", flush=True)

        started = time.perf_counter()
        learning = subprocess.run(
            [sys.executable, "-m", "pipeline.learn", "--bundle", str(Path(args.assets).resolve()), "--corrections",
             str(state / "corrections.sqlite"), "--out", str(work / "bundles"), "--data-dir", data_dir, "--gate"],
            cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        print(learning.stdout[-6000:] + learning.stderr[-3000:] if learning.returncode else learning.stdout[-4000:], flush=True)
        if learning.returncode:
            raise SystemExit(f"the learning step failed (exit {learning.returncode})")
        version = sorted(p for p in (work / "bundles").iterdir() if p.is_dir() and not p.name.endswith(".building"))[-1]
        record = json.loads((version / "learning.json").read_text())
        gate = json.loads((version / "gate.json").read_text())
        print(f"learning step + gate: {seconds:.0f} s (the step alone {record['seconds']:.0f} s, its fine-tuning "
              f"{record['fine_tune']['seconds']:.0f} s) on {len(record['pictures'])} pictures "
              f"({', '.join(f'{s}: {sum(c.values())}' for s, c in record['learnt_from'].items())}), "
              f"{len(record['held_out_pictures'])} held out", flush=True)
        print("the step's parts: " + ", ".join(f"{part} {seconds:.0f} s" for part, seconds in record["seconds_by_part"].items()),
              flush=True)
        print(format_report(gate), flush=True)
        if not gate["passed"]:
            raise SystemExit("the gate refused the new version; the champion keeps serving")
        registry = BundleRegistry(state / "corrections.sqlite")
        registry.promote(version.name)
        registry.close()
        started = time.perf_counter()
        while answering_version(url, items[0][1]) != version.name:
            if time.perf_counter() - started > 120:
                raise SystemExit("the app did not switch to the promoted version within 2 minutes")
            time.sleep(0.5)
        print(f"promoted {version.name}: the running app answers with it {time.perf_counter() - started:.1f} s later", flush=True)
    if args.install:
        install(version, Path(args.install))
        print(f"installed into {args.install}", flush=True)


def install(version_dir, target):
    """Copy a version folder over a bundle folder, keeping the latter's reports/."""
    staging = target.with_name(target.name + ".installing")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(version_dir, staging)
    if (target / "reports").exists():
        shutil.copytree(target / "reports", staging / "reports", dirs_exist_ok=True)
    shutil.rmtree(target)
    staging.rename(target)


if __name__ == "__main__":
    main()
