"""The web app: a Gradio page over the service layer (service.public). UI wiring only.

    python app.py [--assets DIR_OR_HUB_REPO] [--host 127.0.0.1] [--port 7860] [--share] [--behind-proxy]
                  [--state-dir state] [--rate-limit 30] [--admin-port PORT]
                  [--database postgresql://...] [--data-dir DIR] [--mlflow] [--mcp]

Public page (what anyone with the link sees): Classify (upload, webcam or paste -> the verdict,
the answer's classes, "Under the hood", and the "Give us another chance" gallery, where a click
proposes a label) and Model (the bundle's card and figures). It shows a visitor nothing of
anyone else's uploads.

JSON API (web.api), on the same server and port: POST /api/v1/classify, POST /api/v1/corrections;
OpenAPI docs at /api/v1/docs. With --mcp, an MCP tool too (web.mcp): classify_photo at /gradio_api/mcp/.

State: the prediction log, the corrections and the rate-limit counts live in SQLite files in
--state-dir, or in one PostgreSQL database that several replicas share (--database or
$HONEST_DATABASE_URL; see storage). --mlflow also sends each upload's figures to MLflow.

Admin area (web.admin: a second Blocks on --admin-port, bound to this machine only, behind a login
with wrong passwords throttled): the drift dashboard, the review of learning pictures, and the
learning step with its gate, promotion and rollback (service.learning, service.registry). The password
comes from $HONEST_ADMIN_PASSWORD or the file named by $HONEST_ADMIN_PASSWORD_FILE; with
neither, the admin area is off.

Who a visitor is: the address the connection came from. With --share (or --behind-proxy, for a
proxy of your own on this machine) a loopback connection is a proxy's, and the visitor is the
rightmost X-Forwarded-For entry, the one the proxy appended (README, Security).
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline machines: no phoning home
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gradio as gr  # noqa: E402

from bundle.images import MAX_UPLOAD_BYTES, ImageError  # noqa: E402
from service.model_card import model_card_markdown  # noqa: E402
from service.public import VisitorError  # noqa: E402

logger = logging.getLogger("app")
SESSION_TTL_S = 3600  # a visitor's token expires with the kept upload (service.visitors.UploadMemory)
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


def visitor(request):
    """(client address, session id) of a Gradio request: the address the front door saw (web.guard)."""
    if request is None:
        return "local", ""
    return (request.client.host if request.client else "unknown"), request.session_hash or ""


def classify(service, path, client, session):
    """-> verdict, answer's classes, gallery, under the hood, relabel note, session token."""
    if not path:
        return _page("", None, [], "", "", None)
    try:
        result = service.classify(path, client, session)
    except (ImageError, VisitorError) as error:
        return _page(f"### ⚠️ {error}", None, [], "Nothing was saved. Try another picture.", "", None)
    except Exception:
        logger.exception("prediction failed")
        return _page("### ⚠️ Something went wrong on our side; the error was logged.", None, [], "", "", None)
    prediction = result.prediction
    # The bars show the answer: the answering stage's shares of our classes (empty when refused).
    shares = {name.replace("_", " "): share for name, share in prediction.distribution} or None
    gallery = [(service.thumbnail_file(n), n.class_name.replace("_", " ")) for n in prediction.gallery]
    hood = "\n\n".join([prediction.detail, *prediction.under_the_hood])
    return _page(f"### {prediction.message}", shares, gallery, hood, "", result.token)


def _page(verdict, shares, gallery, hood, note, token):
    return verdict, shares, gallery, hood, note, token


def correct_by_gallery(service, token, index, client, session):
    if token is None:
        return "Classify a picture first."
    try:
        return _thanks(service.correct_by_gallery(token, index, client, session))
    except VisitorError as error:
        return f"⚠️ {error}"


def correct_by_name(service, token, label, client, session):
    if token is None:
        return "Classify a picture first."
    try:
        return _thanks(service.correct_by_name(token, label, client, session))
    except VisitorError as error:
        return f"⚠️ {error}"


def _thanks(message):
    return f"### {message}\nThank you: your label was saved and waits for review before any retraining."


# ---------------------------------------------------------------- the public page


def build_app(service, bundle_dir, delete_cache=(900, 3600), mcp=False):
    bundle_dir = Path(bundle_dir)
    examples = sorted(str(p) for p in (bundle_dir / "examples").glob("*.jpg"))
    class_choices = [name.replace("_", " ") for name in service.class_names]

    # The cache of uploaded files is emptied every 15 min of anything older than an hour.
    with gr.Blocks(title="An image classifier that knows when it does not know", delete_cache=delete_cache) as demo:
        gr.Markdown(
            "# What is in your picture?\n"
            f"Recognises {len(class_choices)} kinds of things: {', '.join(class_choices)}. "
            "Anything else gets an honest *I don't know*."
        )
        token = gr.State(None, time_to_live=SESSION_TTL_S)
        with gr.Tab("Classify"):
            with gr.Row():
                with gr.Column(scale=1):
                    upload = UploadImage(label="Your picture", type="filepath", image_mode=None,
                                         sources=["upload", "webcam", "clipboard"], height=320)
                    if examples:
                        gr.Examples(examples, inputs=upload, label="Or try one of these photos")
                with gr.Column(scale=1):
                    verdict = gr.Markdown(elem_id="verdict")
                    shares = gr.Label(label="How sure the answer is", num_top_classes=3, show_heading=False, elem_id="shares")
                    with gr.Accordion("Under the hood: what each part of the system said", open=False, elem_id="hood"):
                        hood = gr.Markdown(elem_id="hood-text")
            gr.Markdown("## Give us another chance\nNot right? Click the training picture that shows the same thing as yours.")
            gallery = gr.Gallery(label="Nearest training pictures, one from each of the closest classes", columns=4, height=300,
                                 allow_preview=False, object_fit="contain", elem_id="gallery")
            with gr.Row():
                correct_class = gr.Dropdown(class_choices, value=None, label="…or pick the right class yourself", scale=3)
                save_class = gr.Button("Save this label", scale=1)
            relabel_note = gr.Markdown(elem_id="relabel-note")
            # An endpoint for API clients: relabel by the gallery position a click would give. JSON,
            # not a Number: a Number would turn True into 1 and round 1.5 before we could refuse them.
            relabel_index = gr.JSON(visible=False)
            relabel_button = gr.Button(visible=False)

            def on_upload(path, request: gr.Request):
                return classify(service, path, *visitor(request))

            def on_gallery_click(token_value, event: gr.SelectData, request: gr.Request):
                return correct_by_gallery(service, token_value, event.index, *visitor(request))

            def on_relabel(token_value, index, request: gr.Request):
                return correct_by_gallery(service, token_value, index, *visitor(request))

            def on_relabel_by_name(token_value, label, request: gr.Request):
                return correct_by_name(service, token_value, label, *visitor(request))

            upload.change(on_upload, upload, [verdict, shares, gallery, hood, relabel_note, token], api_name="classify")
            gallery.select(on_gallery_click, token, relabel_note, api_visibility="private")
            relabel_button.click(on_relabel, [token, relabel_index], relabel_note, api_name="relabel")
            save_class.click(on_relabel_by_name, [token, correct_class], relabel_note, api_name="relabel_by_name")

        if mcp:
            from web.mcp import TOOL, ToolError, classify_for_mcp

            def classify_photo(image_base64: str, request: gr.Request) -> str:
                """Classify a photo into one of 13 classes (CIFAR-10's ten: airplane, automobile, bird, cat, deer,
                dog, frog, horse, ship, truck; and fruit and vegetables, insects, large omnivores and herbivores), or
                refuse honestly: "Sorry, your image label is not in our training set" when it shows none of them,
                "Not sure enough to answer." when it looks like one of them but not surely which.

                Args:
                    image_base64: the picture file (JPEG, PNG, GIF, WebP, BMP or TIFF, at most 25 MB), base64-encoded, bare or as a data: URI. URLs are not fetched.

                Returns:
                    JSON: answer (our class, or null when refused), answered_by (cnn, fallback or refused), refusal, confidence, verdict, detail, top_classes.
                """
                # Gradio's MCP server hands over the HTTP request itself (no session): its client is the visitor.
                client = request.client.host if getattr(request, "client", None) else "unknown"
                try:
                    return json.dumps(classify_for_mcp(service, image_base64, client))
                except ToolError as error:
                    raise gr.Error(str(error), print_exception=False) from None

            gr.api(classify_photo, api_name=TOOL, queue=False)

        with gr.Tab("Model"):
            gr.Markdown(model_card_markdown(service.predictor.bundle))
            for file_name, caption in FIGURES:
                if (bundle_dir / "figures" / file_name).exists():
                    gr.Image(str(bundle_dir / "figures" / file_name), label=caption, interactive=False, buttons=["fullscreen"])
    return demo


# ---------------------------------------------------------------- start-up


def make_service(assets, state_dir, rate_limit=30, database=None):
    """`database`: None (SQLite files in the state folder) or a postgresql:// URL that replicas share."""
    import storage
    from monitoring import PredictionLog
    from service.bundle import Bundle
    from service.corrections import CorrectionStore
    from service.limits import ClientLimits, SharedCounters
    from service.predictor import Predictor
    from service.public import PublicService
    from service.visitors import Pseudonyms, UploadMemory

    from service.registry import BundleRegistry, BundleWatcher

    bundle = Bundle.load(assets)
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    targets = storage.state_targets(database, state_dir)
    predictor = Predictor(bundle, log=PredictionLog(targets.log))
    # The registry's champion serves, when there is one (the learning loop promoted it); every
    # replica on the database follows it without a restart.
    watcher = BundleWatcher(BundleRegistry(targets.corrections), predictor, Bundle.load).start()
    # Replicas on one database count each visitor's uploads together; one process counts in memory.
    counters = SharedCounters(targets.corrections) if targets.shared and rate_limit > 0 else None
    service = PublicService(
        predictor, CorrectionStore(targets.corrections, bundle.class_names),
        ClientLimits(uploads_per_minute=rate_limit, corrections_per_minute=max(1, rate_limit // 3), counters=counters),
        UploadMemory(ttl_s=SESSION_TTL_S), Pseudonyms(state_dir, database=targets.corrections if targets.shared else None),
        thumbnails_dir=state_dir / "gallery")
    service.watcher, service.store_target = watcher, targets.corrections
    return service, bundle.directory


def launch(demo, host, port, share, bundle_dir, service, mcp=False):
    from starlette.middleware import Middleware

    from web.api import create_api
    from web.guard import PublicGuard

    # Per-client fairness is the front door's (web.guard: each client's places) and the service's
    # (service.limits: in flight, per minute); the queue itself is long enough that one client's
    # burst never fills it for everyone else. api_open=False: Gradio's direct /run/ route refuses
    # queued functions (the front door closes it, and /call/, before Gradio sees them).
    demo.queue(default_concurrency_limit=8, max_size=1024, api_open=False)
    _, local_url, share_url = demo.launch(
        server_name=host, server_port=port, share=share, prevent_thread_lock=True,
        max_file_size=MAX_UPLOAD_BYTES, allowed_paths=[str(Path(bundle_dir) / "examples"), str(service.thumbnails_dir)],
        footer_links=["api", "gradio"], show_error=False, mcp_server=mcp,
        # The front door: upload limits, and the JSON API (/api/v1) on the same port and link.
        app_kwargs={"middleware": [Middleware(PublicGuard, limits=service.limits, api=create_api(service),
                                              functions=set(demo.fns))]},
    )
    if mcp:
        from web.mcp import only_our_tool

        only_our_tool(demo)
        print(f"MCP tool classify_photo on {(share_url or local_url).rstrip('/')}/gradio_api/mcp/", flush=True)
    print(f"Serving on {local_url}", flush=True)
    if share and not share_url:
        print("Could not create a public --share link (this machine seems to be offline); "
              f"the app keeps running locally at {local_url}", flush=True)
    elif share_url:
        print(f"Public link: {share_url}", flush=True)
    return local_url, share_url


def trust_proxy(trusted, environ=os.environ):
    """Whom uvicorn believes about X-Forwarded-For (FORWARDED_ALLOW_IPS, read when the server
    starts): loopback peers when a proxy on this machine appends each visitor's address (the share
    tunnel's server appends the address it saw, and the tunnel connects from loopback), nobody
    otherwise, so that no local process can make up visitors. uvicorn then takes the rightmost
    entry that is not itself trusted. An operator's own FORWARDED_ALLOW_IPS is kept."""
    environ.setdefault("FORWARDED_ALLOW_IPS", "127.0.0.1,::1" if trusted else "")


def release_freed_memory():
    """glibc keeps freed blocks of a big decode for reuse and grows its threshold for returning
    memory to the system; a fixed threshold returns the blocks of a 49-megapixel upload at once."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: allocations above it are mapped and unmapped
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assets", default="assets", help="bundle folder, or a Hugging Face Hub repo id (owner/name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="ask Gradio for a public link (implies --behind-proxy)")
    parser.add_argument("--behind-proxy", action="store_true",
                        help="a proxy on this machine appends each visitor's address to X-Forwarded-For: from "
                             "loopback, believe its rightmost entry (the --share tunnel does this)")
    parser.add_argument("--state-dir", default="state", help="where the monitoring log and visitors' corrections are kept")
    parser.add_argument("--rate-limit", type=int, default=30,
                        help="uploads per client per minute (corrections: a third of it); 0 turns every per-client limit off")
    parser.add_argument("--admin-port", type=int, default=None, help="port of the admin area (default: --port + 1)")
    parser.add_argument("--database", default=None,
                        help="postgresql://user@host:port/db: the log, corrections and rate limits, shared by replicas; "
                             "or a folder for the SQLite files (default $HONEST_DATABASE_URL, else --state-dir)")
    parser.add_argument("--mcp", action="store_true",
                        help="also serve the classify endpoint as an MCP tool (classify_photo) at /gradio_api/mcp/, "
                             "with the page's limits")
    parser.add_argument("--data-dir", default=None,
                        help="the data folder the admin's learning step reads (default $HONEST_DATA_DIR, else ../shared/data)")
    parser.add_argument("--mlflow", action="store_true",
                        help="also log each upload's confidence, entropy and colour-histogram distance to MLflow "
                             "($MLFLOW_TRACKING_URI, else STATE_DIR/mlruns.db; pip install -r requirements-mlflow.txt)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    trust_proxy(args.share or args.behind_proxy)
    os.umask(0o077)  # the state files (votes, pictures, the log, the salt) are the owner's alone
    release_freed_memory()
    tracker = start_tracking(args) if args.mlflow else None
    import storage
    from bundle.files import BundleUnavailable
    from service.corrections import CorrectionError

    try:
        service, bundle_dir = make_service(args.assets, args.state_dir, args.rate_limit, storage.configured_url(args.database))
    except (BundleUnavailable, storage.DatabaseError, CorrectionError) as error:
        sys.exit(f"Cannot start: {error}")
    service.predictor.tracker = tracker
    demo = build_app(service, bundle_dir, mcp=args.mcp)
    launch(demo, args.host, args.port, args.share, bundle_dir, service, mcp=args.mcp)
    from service.learning import LearningControl
    from web.admin import launch_admin

    learning = LearningControl(service.watcher.registry, service.watcher, service.corrections, service.store_target,
                               args.state_dir, args.assets, args.data_dir)
    launch_admin(service, args.admin_port or args.port + 1, learning)
    try:
        demo.block_thread()
    finally:
        if tracker is not None:
            tracker.close()


def start_tracking(args):
    """The MLflow upload logger, before the slow bundle load, so that a missing extra is said at once."""
    import signal

    from monitoring.tracking import TrackingUnavailable, UploadTracker

    try:
        tracker = UploadTracker(args.state_dir, tags={"bundle": str(args.assets)})
    except TrackingUnavailable as error:
        sys.exit(f"Cannot start: {error}")
    print(f"MLflow: each upload is logged to {tracker.uri} (experiment {tracker.config.experiment!r})", flush=True)

    # A plain kill (SIGTERM) stops the server like Ctrl-C does, so that the queued uploads are written.
    def interrupt(signal_number, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    return tracker


if __name__ == "__main__":
    main()
