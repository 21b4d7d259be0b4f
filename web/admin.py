"""The admin area: a second Blocks on its own port, bound to this machine only, behind a login.

    admin = build_admin(service, learning)     # Monitor, Review, Learning
    launch_admin(service, learning, port)      # off without a password (admin_password)

- Monitor: the drift dashboard (monitoring.dashboard).
- Review: the learning pictures themselves (visitors' labels and the ImageNet fallback's sure
  answers), filtered by proposed class, source and status; a click on a picture selects it, and
  the selected ones, or all those shown, are accepted or rejected at once.
- Learning: the learning step off the request path (service.learning), the gate's table of each
  new version against the champion, promotion and rollback (service.registry).
"""

import datetime
import io
import os
from pathlib import Path

import gradio as gr

PASSWORD_VARIABLE, PASSWORD_FILE_VARIABLE = "HONEST_ADMIN_PASSWORD", "HONEST_ADMIN_PASSWORD_FILE"
ALL = "all"
QUEUE_PAGE = 60  # pictures shown at once


def admin_password(environ=os.environ):
    """The admin password from the environment or the file it names; None: no admin area."""
    if environ.get(PASSWORD_VARIABLE):
        return environ[PASSWORD_VARIABLE]
    if environ.get(PASSWORD_FILE_VARIABLE):
        text = Path(environ[PASSWORD_FILE_VARIABLE]).read_text().strip()
        return text or None
    return None


# ---------------------------------------------------------------- handlers (plain functions)


def monitor(predictor):
    dashboard = predictor.dashboard()
    if dashboard is None:
        return "Monitoring is off (no log or no reference in the bundle).", None, None, None, None, []
    return (dashboard.drift_markdown, *dashboard.frames, [(_displayable(image), caption) for image, caption in dashboard.last_uploads])


def _displayable(image):
    """A grayscale bundle's pictures are (h, w, 1); gr.Gallery draws (h, w) arrays as gray."""
    return image[:, :, 0] if image.ndim == 3 and image.shape[-1] == 1 else image


def review_queue(corrections, label=ALL, source=ALL, status="pending"):
    """-> (gallery items, the vote ids shown, a summary line)."""
    from PIL import Image

    votes = corrections.queue(status, None if label in (None, ALL) else label.replace(" ", "_"),
                              None if source in (None, ALL) else source, limit=QUEUE_PAGE)
    items = []
    for vote in votes:
        others = [v.label for v in corrections.votes(picture=vote.picture) if v.id != vote.id]
        when = datetime.datetime.fromtimestamp(vote.time, datetime.timezone.utc).strftime("%m-%d %H:%M")
        caption = (f"#{vote.id} {vote.label.replace('_', ' ')} (from {vote.source}); app said {vote.answer or 'refused'}"
                   f"{'; other votes: ' + ', '.join(others) if others else ''}; {when}")
        items.append((Image.open(io.BytesIO(corrections.picture(vote.picture))), caption))
    counts = corrections.counts()
    summary = (f"{len(votes)} shown ({status}{'' if label in (None, ALL) else ', ' + label}"
               f"{'' if source in (None, ALL) else ', from ' + source}). In all: "
               + ", ".join(f"{count} {name}" for name, count in counts.items()))
    return items, [vote.id for vote in votes], summary


def toggle(selected, shown, index):
    """A click on picture `index` of those shown selects it, or unselects it."""
    if index is None or not 0 <= index < len(shown):
        return selected
    vote_id = shown[index]
    return [v for v in selected if v != vote_id] if vote_id in selected else [*selected, vote_id]


def review(corrections, vote_ids, accept):
    if not isinstance(vote_ids, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in vote_ids):
        return "Give a list of vote ids."
    if not vote_ids:
        return "Select pictures first (click them), or use the buttons for all those shown."
    changed = corrections.review_many(vote_ids, accept, reviewer="admin")
    return f"{changed} {'accepted' if accept else 'rejected'}."


def learning_status(learning):
    """The learning tab's text: the step's state, the champion, and each version's gate."""
    status = learning.status()
    lines = [f"**Learning step:** {status['state']}", f"**Serving:** version {status['serving']}"]
    if status["accepted"]:
        lines.append("**Accepted learning pictures:** " + ", ".join(f"{n} from {s}" for s, n in status["accepted"].items()))
    for version in status["versions"][:5]:
        gate = version.gate or {}
        verdict = "passed" if gate.get("passed") else ("refused: " + "; ".join(gate.get("reasons", []))) if gate else "not gated"
        lines.append(f"- `{version.version}` (from {version.parent or 'the build'}): {verdict}")
    return "\n".join(lines), status["log"], gate_table(status["versions"][0].gate if status["versions"] else None), \
        gr.update(choices=[v.version for v in status["versions"]])


def gate_table(gate):
    if not gate or "rows" not in gate:
        return None
    return [[row["what"], _figure(row["champion"]), _figure(row["challenger"]), row["tolerance"],
             "worse than allowed" if row["failed"] else "ok"] for row in gate["rows"]]


def _figure(value):
    return "-" if value is None else round(float(value), 4)


# ---------------------------------------------------------------- the page


def build_admin(service, learning=None):
    corrections, predictor = service.corrections, service.predictor
    classes = [ALL] + [name.replace("_", " ") for name in service.class_names]
    with gr.Blocks(title="Admin: monitoring, review and learning") as admin:
        gr.Markdown("# Admin\nMonitoring of every upload, the review of learning pictures, and learning from them.")
        with gr.Tab("Monitor"):
            refresh = gr.Button("Refresh")
            drift = gr.Markdown()
            with gr.Row():
                histogram_plot = gr.LinePlot(
                    x="intensity", y="difference", color="channel", elem_id="histogram-plot",
                    color_map={"red": "#d62728", "green": "#2ca02c", "blue": "#1f77b4", "gray": "#444444"},
                    title="Colour histogram of the drift window minus each upload's class's training average",
                    x_title="pixel intensity", y_title="share of pixels, difference", x_lim=[0, 255])
                answers_plot = gr.BarPlot(x="answer", y="uploads", sort="-y", elem_id="answers-plot",
                                          title="What the drift window's uploads were told", x_label_angle=-45)
            with gr.Row():
                confidence_plot = gr.ScatterPlot(
                    x="time", y="change", color="class", elem_id="confidence-plot",
                    tooltip=["class", "confidence", "validation_mean", "uploads"],
                    title="Mean confidence per predicted class over time, minus its validation mean",
                    x_title="time (UTC)", y_title="confidence - validation mean")
                entropy_plot = gr.LinePlot(
                    x="time", y="entropy", color="series", elem_id="entropy-plot",
                    color_map={"uploads": "#9467bd", "validation mean": "#555555", "validation 10%": "#bbbbbb",
                               "validation 90%": "#bbbbbb"},
                    title="Pixel-intensity entropy over time", x_title="time (UTC)", y_title="mean entropy (bits)")
            last_uploads = gr.Gallery(label="Last 10 uploads (as the model saw them)", columns=10, height=160, allow_preview=False)
            monitor_outputs = [drift, histogram_plot, confidence_plot, entropy_plot, answers_plot, last_uploads]
            refresh.click(lambda: monitor(predictor), None, monitor_outputs, api_name="monitor")
            admin.load(lambda: monitor(predictor), None, monitor_outputs)

        with gr.Tab("Review"):
            with gr.Row():
                label = gr.Dropdown(classes, value=ALL, label="Proposed class")
                source = gr.Dropdown([ALL, "visitor", "fallback"], value=ALL, label="Source")
                status = gr.Dropdown(["pending", "accepted", "rejected"], value="pending", label="Status")
                show = gr.Button("Show")
            summary = gr.Markdown(elem_id="review-summary")
            pictures = gr.Gallery(label="Click a picture to select it", columns=6, height=420, allow_preview=False,
                                  elem_id="review-gallery")
            shown = gr.State([])
            selected = gr.CheckboxGroup([], label="Selected votes", elem_id="review-selected")
            with gr.Row():
                accept, reject = gr.Button("Accept selected", variant="primary"), gr.Button("Reject selected")
                accept_all, reject_all = gr.Button("Accept all shown"), gr.Button("Reject all shown")
            outcome = gr.Markdown(elem_id="review-outcome")
            # Endpoints for scripts (the learning-loop bench, the replicas' test): review by vote ids.
            vote_ids = gr.JSON(visible=False)
            accept_ids, reject_ids = gr.Button(visible=False), gr.Button(visible=False)
            accept_ids.click(lambda ids: review(corrections, ids or [], True), vote_ids, outcome, api_name="accept")
            reject_ids.click(lambda ids: review(corrections, ids or [], False), vote_ids, outcome, api_name="reject")

            def load_queue(label_value, source_value, status_value):
                items, ids, text = review_queue(corrections, label_value, source_value, status_value)
                return items, ids, gr.update(choices=ids, value=[]), text

            def on_select(selection, ids, event: gr.SelectData):
                return toggle(selection or [], ids, event.index)

            queue_outputs = [pictures, shown, selected, summary]
            filters = [label, source, status]
            show.click(load_queue, filters, queue_outputs, api_name="review_queue")
            admin.load(load_queue, filters, queue_outputs)
            pictures.select(on_select, [selected, shown], selected)
            for button, use_all, verdict in ((accept, False, True), (reject, False, False), (accept_all, True, True),
                                             (reject_all, True, False)):
                button.click(lambda chosen, ids, use_all=use_all, verdict=verdict: review(corrections, ids if use_all else chosen, verdict),
                             [selected, shown], outcome).then(load_queue, filters, queue_outputs)

        if learning is not None:
            with gr.Tab("Learning"):
                gr.Markdown("Learn from the accepted pictures: the CNN is fine-tuned, checked against the champion on "
                            "the same pictures, and serves only once you promote it (every replica switches within seconds).")
                with gr.Row():
                    start = gr.Button("Learn now", variant="primary")
                    refresh_learning = gr.Button("Refresh")
                learning_text = gr.Markdown(elem_id="learning-status")
                table = gr.Dataframe(headers=["row", "champion", "challenger", "tolerance", ""], interactive=False,
                                     label="The newest version against the champion (the gate)")
                with gr.Row():
                    version = gr.Dropdown([], label="Version")
                    promote, rollback = gr.Button("Promote"), gr.Button("Roll back to the previous champion")
                action = gr.Markdown(elem_id="learning-action")
                log = gr.Textbox(label="The learning step's log (last lines)", lines=8, max_lines=8)
                learning_outputs = [learning_text, log, table, version]
                start.click(lambda: learning.start(), None, action).then(lambda: learning_status(learning), None, learning_outputs)
                refresh_learning.click(lambda: learning_status(learning), None, learning_outputs)
                admin.load(lambda: learning_status(learning), None, learning_outputs)
                promote.click(lambda v: learning.promote(v), version, action).then(
                    lambda: learning_status(learning), None, learning_outputs)
                rollback.click(lambda: learning.rollback(), None, action).then(
                    lambda: learning_status(learning), None, learning_outputs)
    return admin


def launch_admin(service, port, learning=None):
    from starlette.middleware import Middleware

    from web.login_throttle import LoginThrottle

    password = admin_password()
    if password is None:
        print(f"Admin area off: set {PASSWORD_VARIABLE} (or {PASSWORD_FILE_VARIABLE}, a file holding it) to turn on "
              "monitoring, the review of learning pictures and learning.", flush=True)
        return None
    admin = build_admin(service, learning)
    admin.queue(default_concurrency_limit=2)
    # Bound to this machine only: a --share link never reaches it.
    _, url, _ = admin.launch(server_name="127.0.0.1", server_port=port, auth=("admin", password),
                             prevent_thread_lock=True, show_error=False, footer_links=[],
                             app_kwargs={"middleware": [Middleware(LoginThrottle)]})
    print(f"Admin area on {url} (user admin)", flush=True)
    return admin
