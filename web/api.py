"""A JSON API beside the page, on the same server, port and --share link: the same service, the
same per-client limits, the same plain messages.

    curl -F file=@photo.jpg http://127.0.0.1:7860/api/v1/classify
    curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg' http://127.0.0.1:7860/api/v1/classify
    curl -H 'Content-Type: application/json' -d '{"token": "...", "label": "ship"}' http://127.0.0.1:7860/api/v1/corrections

OpenAPI docs are served at /api/v1/docs (schema: /api/v1/openapi.json). The page's front door
(web.guard.PublicGuard) hands every /api/v1 request to this app, so Gradio never sees them; a
--share link therefore carries the API too.
"""

import tempfile

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from bundle.images import MAX_UPLOAD_BYTES, TOO_LARGE, Busy, ImageError
from service.public import VisitorError

PREFIX = "/api/v1"


class Share(BaseModel):
    class_name: str
    share: float


class GalleryItem(BaseModel):
    class_name: str
    id: int  # the training picture's row in the bundle's gallery


class Answer(BaseModel):
    answer: str | None  # our class, or null when the app refuses
    answered_by: str  # "cnn", "fallback" or "refused"
    refusal: str | None  # when refused: "unknown" (none of our classes) or "unsure" (ours, but not surely which)
    confidence: float
    verdict: str  # the line the page shows
    detail: str  # why, in one sentence
    top_classes: list[Share]  # the answering stage's shares of our classes, best first; [] when refused
    gallery: list[GalleryItem]  # the nearest training pictures, in the order the page shows them
    token: str  # send it back with a correction, within the hour
    bundle_version: str | None = None  # the bundle that answered (versions swap while the app serves)


class Correction(BaseModel):
    token: str
    label: str  # one of our classes


class Thanks(BaseModel):
    message: str


class Error(BaseModel):
    error: str


def create_api(service):
    api = FastAPI(title="An image classifier that knows when it does not know", version="1",
                  docs_url=f"{PREFIX}/docs", openapi_url=f"{PREFIX}/openapi.json", redoc_url=None)
    errors = {400: {"model": Error}, 413: {"model": Error}, 429: {"model": Error}, 503: {"model": Error}}

    @api.post(f"{PREFIX}/classify", response_model=Answer, responses=errors)
    async def classify(request: Request):
        """A picture as a multipart file (any field name) or as the raw body."""
        picture = await _picture_file(request)
        if isinstance(picture, JSONResponse):
            return picture
        try:
            # The models run in a worker thread: the event loop keeps serving the page meanwhile.
            # The file's bytes are read there, within the service's decode budget.
            result = await run_in_threadpool(service.classify, picture, _client(request), "api")
        except VisitorError as error:
            return _error(429, str(error))
        except Busy as error:
            return _error(503, str(error))
        except ImageError as error:
            return _error(400, str(error))
        finally:
            picture.close()
        return answer_json(result.prediction, result.token)

    @api.post(f"{PREFIX}/corrections", response_model=Thanks, responses=errors)
    def correct(correction: Correction, request: Request):
        """Propose the right class for an upload you classified (a vote, reviewed before any retraining)."""
        try:
            message = service.correct_by_name(correction.token, correction.label.replace("_", " "), _client(request), "api")
        except VisitorError as error:
            return _error(429 if "Too many" in str(error) else 400, str(error))
        return {"message": message}

    return api


def answer_json(prediction, token):
    return {
        "answer": prediction.label, "answered_by": prediction.answered_by, "refusal": prediction.refusal,
        "confidence": float(prediction.confidence),
        "verdict": prediction.message, "detail": prediction.detail,
        "top_classes": [{"class_name": name, "share": float(share)} for name, share in prediction.distribution[:5]],
        "gallery": [{"class_name": n.class_name, "id": int(n.index)} for n in prediction.gallery],
        "token": token, "bundle_version": prediction.bundle_version,
    }


async def _picture_file(request):
    """The uploaded picture as a file (spooled: large ones on disk, not in memory), or a JSON error
    response: too large, empty, or more than one file. The declared length, the time it took and
    the one file of a form were checked at the front door (web.guard) before this app saw the request."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=2, max_fields=4, max_part_size=MAX_UPLOAD_BYTES)
        files = [value for value in form.values() if hasattr(value, "read")]
        if len(files) != 1:
            return _error(400, "Send one picture as one file field." if files else "The form holds no file.")
        picture, size = files[0].file, files[0].size
    else:
        picture, size = tempfile.SpooledTemporaryFile(max_size=1024 * 1024), 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                break
            picture.write(chunk)
        picture.seek(0)
    if size > MAX_UPLOAD_BYTES:
        picture.close()
        return _error(413, TOO_LARGE)
    if not size:
        picture.close()
        return _error(400, "The file is empty.")
    return picture


def _client(request):
    """The visitor's address, as the front door and uvicorn settled it (web.guard)."""
    return request.client.host if request.client else "unknown"


def _error(status, message):
    return JSONResponse({"error": message}, status_code=status)
