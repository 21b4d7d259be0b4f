"""How long `python app.py` takes from launch to serving, on a bundle folder.

    python -m bench.startup [--assets assets] [--repeats 3]
"""

import argparse
import tempfile

from bench.app_server import running_app


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as state, running_app(args.assets, state) as (_, seconds):
            times.append(seconds)
    print("start-up to serving (s): " + ", ".join(f"{t:.1f}" for t in times) + f"; best {min(times):.1f}")


if __name__ == "__main__":
    main()
