"""The web app: a Gradio page over service.Predictor. UI wiring only.

    python app.py [--assets DIR_OR_HUB_REPO] [--host 127.0.0.1] [--port 7860] [--share] [--state-dir state]

Classify tab: upload (or webcam, paste, examples) -> verdict, top classes, and the "Give us another
chance" gallery, where a click relabels the upload and saves the correction. Monitor tab: drift
dashboard. Model tab: the bundle's metrics and figures.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline machines: no phoning home
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gradio as gr  # noqa: E402

from classifier.images import MAX_UPLOAD_BYTES, ImageError  # noqa: E402
from service.model_card import model_card_markdown  # noqa: E402

logger = logging.getLogger("app")
FIGURES = (
    ("confusion_matrix.png", "Confusion matrix"), ("curves.png", "Training curves"),
    ("tsne.png", "t-SNE of penultimate features"), ("predictions.png", "Test predictions"),
    ("ood_histograms.png", "OOD scores: in-distribution vs unknown images"),
    ("errors_kmeans.png", "Misclassified test images in K-Means clusters of their features (true → predicted)"),
    ("errors_dbscan.png", "Misclassified test images in DBSCAN clusters: tight pockets of one confusion, then the noise"),
    ("activations.png", "What the convolutions see: feature maps of one test image"),
    ("filters.png", "The first convolution's filters"),
)


class UploadImage(gr.Image):
    """gr.Image that hands the raw uploaded file to our decoder, so that a broken or hostile file
    gets our plain message instead of Pillow's error from inside Gradio."""

    is_template = True  # drawn by the browser as a normal image component

    def preprocess(self, payload):
        if payload is not None and payload.path:
            return str(payload.path)
        return super().preprocess(payload)


# ---------------------------------------------------------------- handlers (plain functions)


def classify(predictor, path):
    """-> verdict, top classes, detail, gallery, relabel note, session state."""
    if not path:
        return "", None, "", [], "", None
    try:
        prediction = predictor.predict(path)
    except ImageError as error:
        return f"### ⚠️ {error}", None, "Nothing was saved. Try another picture.", [], "", None
    except Exception:
        logger.exception("prediction failed")
        return "### ⚠️ Something went wrong on our side; the error was logged.", None, "", [], "", None
    top = {name.replace("_", " "): probability for name, probability in prediction.top_classes}
    gallery = [
        (_displayable(neighbour.thumbnail), f"{neighbour.class_name.replace('_', ' ')} ({neighbour.probability:.0%})")
        for neighbour in prediction.gallery
    ]
    return f"### {prediction.message}", top, _detail(prediction), gallery, "", prediction


def relabel(predictor, prediction, index):
    if prediction is None:
        return "Classify a picture first."
    try:
        neighbour = prediction.gallery[int(index)]
    except (IndexError, TypeError, ValueError):
        return "That gallery image does not exist."
    return _save_correction(predictor, prediction, neighbour.class_name)


def relabel_by_name(predictor, prediction, label):
    if prediction is None:
        return "Classify a picture first."
    if not label:
        return "Choose a class first."
    return _save_correction(predictor, prediction, label.replace(" ", "_"))


def _save_correction(predictor, prediction, label):
    try:
        message = predictor.relabel(prediction, label)
    except ValueError as error:
        return f"⚠️ {error}"
    except Exception:
        logger.exception("saving a correction failed")
        return "⚠️ The correction could not be saved; the error was logged."
    return f"### {message}\nThank you: the picture was saved for the next retraining."


def monitor(predictor):
    dashboard = predictor.dashboard()
    if dashboard is None:
        return "Monitoring is off (no log or no reference in the bundle).", None, None, None, []
    return (dashboard.drift_markdown, *dashboard.figures, [(_displayable(image), caption) for image, caption in dashboard.last_uploads])


def _displayable(image):
    """A grayscale bundle's pictures are (h, w, 1); gr.Gallery draws (h, w) arrays as gray."""
    return image[:, :, 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def _detail(prediction):
    lines = [prediction.detail]
    if prediction.ood_score is not None:
        verdict = "like" if prediction.ood_inlier else "unlike"
        lines.append(f"OOD check: the picture looks {verdict} our training images of its class (score {prediction.ood_score:+.3f}).")
    if prediction.imagenet_top:
        seen = ", ".join(
            f"{item['imagenet_class']} {item['probability']:.0%}" + (f" → {item['our_class'].replace('_', ' ')}" if item["our_class"] else "")
            for item in prediction.imagenet_top
        )
        lines.append(f"ImageNet fallback saw: {seen}.")
    return "\n\n".join(lines)


# ---------------------------------------------------------------- layout


def build_app(predictor, bundle_dir):
    bundle_dir = Path(bundle_dir)
    examples = sorted(str(p) for p in (bundle_dir / "examples").glob("*.jpg"))
    class_choices = [name.replace("_", " ") for name in predictor.class_names]

    with gr.Blocks(title="An image classifier that knows when it does not know") as demo:
        gr.Markdown(
            "# What is in your picture?\n"
            f"Recognises {len(class_choices)} kinds of things: {', '.join(class_choices)}. "
            "Anything else gets an honest *I don't know*."
        )
        prediction_state = gr.State(None)
        with gr.Tab("Classify"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = UploadImage(
                        label="Your picture", type="filepath", image_mode=None,
                        sources=["upload", "webcam", "clipboard"], height=320,
                    )
                    if examples:
                        gr.Examples(examples, inputs=upload, label="Or try one of these photos")
                with gr.Column(scale=1):
                    verdict = gr.Markdown(elem_id="verdict")
                    top_classes = gr.Label(label="The small CNN's top classes", num_top_classes=3, show_heading=False)
                    detail = gr.Markdown(elem_id="detail")
            gr.Markdown("## Give us another chance\nNot right? Click the training image that shows the same thing as your picture.")
            gallery = gr.Gallery(label="Nearest training images, one from each of the top classes", columns=4, height=300,
                                 allow_preview=False, object_fit="contain", elem_id="gallery")
            with gr.Row():
                correct_class = gr.Dropdown(class_choices, value=None, label="…or pick the right class yourself", scale=3)
                save_class = gr.Button("Save this label", scale=1)
            relabel_note = gr.Markdown(elem_id="relabel-note")
            # An endpoint for API clients: relabel by the gallery position a click would give.
            relabel_index = gr.Number(visible=False, precision=0)
            relabel_button = gr.Button(visible=False)

        with gr.Tab("Monitor") as monitor_tab:
            refresh = gr.Button("Refresh")
            drift = gr.Markdown()
            with gr.Row():
                histogram_plot, confidence_plot, entropy_plot = gr.Plot(), gr.Plot(), gr.Plot()
            last_uploads = gr.Gallery(label="Last 10 uploads (as the model saw them)", columns=10, height=160, allow_preview=False)

        with gr.Tab("Model"):
            gr.Markdown(model_card_markdown(predictor.bundle))
            for file_name, caption in FIGURES:
                if (bundle_dir / "figures" / file_name).exists():
                    gr.Image(str(bundle_dir / "figures" / file_name), label=caption, interactive=False, buttons=["fullscreen"])

        classify_outputs = [verdict, top_classes, detail, gallery, relabel_note, prediction_state]
        upload.change(lambda path: classify(predictor, path), upload, classify_outputs, api_name="classify")

        def on_select(prediction, event: gr.SelectData):
            return relabel(predictor, prediction, event.index)

        gallery.select(on_select, prediction_state, relabel_note, api_visibility="private")
        relabel_button.click(lambda p, i: relabel(predictor, p, i), [prediction_state, relabel_index], relabel_note, api_name="relabel")
        save_class.click(lambda p, label: relabel_by_name(predictor, p, label), [prediction_state, correct_class], relabel_note, api_name="relabel_by_name")
        monitor_outputs = [drift, histogram_plot, confidence_plot, entropy_plot, last_uploads]
        for trigger in (refresh.click, monitor_tab.select):
            trigger(lambda: monitor(predictor), None, monitor_outputs, api_name="monitor" if trigger == refresh.click else None,
                    api_visibility="public" if trigger == refresh.click else "private")
    return demo


# ---------------------------------------------------------------- start-up


def make_predictor(assets, state_dir):
    from classifier.bundle import Bundle
    from monitoring import PredictionLog
    from service.predictor import Predictor
    from similarity import FeedbackStore

    bundle = Bundle.load(assets)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    log = PredictionLog(state_dir / "monitoring.sqlite")
    feedback = FeedbackStore(state_dir / "feedback", class_names=bundle.class_names)
    return Predictor(bundle, log=log, feedback=feedback), bundle.directory


def launch(demo, host, port, share, bundle_dir):
    demo.queue(default_concurrency_limit=4, max_size=64)
    _, local_url, share_url = demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True,
        max_file_size=MAX_UPLOAD_BYTES, allowed_paths=[str(Path(bundle_dir) / "examples")],
        footer_links=["api", "gradio"], show_error=False,
    )
    print(f"Serving on {local_url}", flush=True)
    if share and not share_url:
        print("Could not create a public --share link (this machine seems to be offline); "
              f"the app keeps running locally at {local_url}", flush=True)
    elif share_url:
        print(f"Public link: {share_url}", flush=True)
    return local_url, share_url


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets", help="bundle folder, or a Hugging Face Hub repo id (owner/name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link")
    parser.add_argument("--state-dir", default="state", help="where the monitoring log and users' corrections are kept")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from classifier.bundle import BundleUnavailable

    try:
        predictor, bundle_dir = make_predictor(args.assets, args.state_dir)
    except BundleUnavailable as error:
        sys.exit(f"Cannot start: {error}")
    demo = build_app(predictor, bundle_dir)
    launch(demo, args.host, args.port, args.share, bundle_dir)
    demo.block_thread()


if __name__ == "__main__":
    main()
