"""Gradio's own cost: the app's upload component and queue settings over a handler that does
nothing. bench.app_load --floor drives it exactly as it drives the real app, so the difference
between the two is what our service adds.

    python -m bench.gradio_floor --port 7861
"""

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from app import UploadImage  # noqa: E402
from bundle.images import MAX_UPLOAD_BYTES  # noqa: E402


def build_floor_app():
    with gr.Blocks() as demo:
        upload = UploadImage(type="filepath", image_mode=None)
        verdict = gr.Markdown()
        upload.change(lambda path: "### done", upload, verdict, api_name="classify")
    return demo


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=7861)
    args = parser.parse_args()
    demo = build_floor_app()
    demo.queue(default_concurrency_limit=4, max_size=64)  # as app.launch sets them
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=args.port, prevent_thread_lock=True, max_file_size=MAX_UPLOAD_BYTES)
    print(f"Serving on {url}", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
