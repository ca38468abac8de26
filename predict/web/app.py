"""The explorer's FastAPI app: the page (``static/``), its typed JSON API, the images and the explorer's outputs.

Routes (every image is named by its file name as ``GET /api/images`` lists it; a malformed request is a 422
and a refused one a 4xx, each with ``{"detail": "<one line>"}``; the schema is ``GET /api/openapi.json``).
The explorer knows no HTTP: this module alone gives its errors their status (:data:`STATUSES`: a malformed
request 400, an unknown job, result or output 404, an image changed since its result 409, a value that
cannot be accepted 422, a job failed on the server's side 500) and builds every URL it answers:

- ``GET /``: the page; ``/static/...``: its script and style (nothing is loaded from elsewhere).
- ``GET /api/images``: ``{"images": [{"name", "height", "width", "bytes", "cached", "geo"}, ...]}``.
- ``GET /api/image?name=N&side=S``: a JPEG of the image, longer side at most S pixels.
- ``POST /api/encode`` ``{"image", "pipeline", "steps"}``: encode the image's tiles (200 when done, else 202
  with the job).
- ``POST /api/localise`` ``{"image", "query", "pipeline", "steps"}``: 200 ``{"map_url", "peaks",
  "scene_score", "unknown_words", "downloads", ...}``, or 202 ``{"status": "queued" | "encoding", "job",
  "position", "done", "total", "message"}`` while its tiles wait for the encoder (ask again, or poll the job).
- ``GET /api/jobs/<id>``: a job's state; ``DELETE /api/jobs/<id>``: cancel it.
- ``GET /api/regions?result=R&threshold=T``: outlines of the result's map at or above T (0-1).
- ``GET /outputs/<id>.png``: a result's map (``map_url``); any other name is 404, a hidden one (a stored
  file's record) 400.
- ``GET /api/download?result=R&kind=probmap|peaks``: the full-resolution GeoTIFF / the peaks GeoJSON, saved
  under a name made of the image and the query; 409 when the image changed since the result was made.

Every file served from the explorer's outputs (maps, thumbnails, downloads) is verified first (whole, and made
by the result or image content it is asked for: :mod:`predict.provenance`'s stored files); one that fails is
never served as it is: a thumbnail or download is made again at once, a map when its query is asked again.

Every answer carries a strict Content-Security-Policy (this server only, no framing); a state-changing
request (POST, DELETE) from a page of another origin is refused (403); request bodies are bounded (413).
A client may name itself with the ``X-Selo-Client`` header (the page does), for its place in the queue.
"""
from __future__ import annotations

import os
from typing import Annotated, Literal

from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from predict.explorer import (
    BadRequest,
    Explorer,
    ExplorerError,
    ImageChanged,
    InvalidRequest,
    Job,
    JobFailed,
    NotFound,
    Result,
)
from predict.resources import package_path

STATIC_DIR = str(package_path("web", "static"))  # package data: the page, its script and style
RETRY_SECONDS = "1"
MAX_BODY_BYTES = 16 * 1024  # a request is a name, a query and a few numbers
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
                               "style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# The explorer's refusals as HTTP: the one place they get a status (its core knows no HTTP)
STATUSES = {BadRequest: 400, NotFound: 404, ImageChanged: 409, InvalidRequest: 422, JobFailed: 500}

ClientName = Annotated[str | None, Header(alias="X-Selo-Client", max_length=64)]
JobId = Annotated[str, Path(max_length=32)]
Steps = Annotated[str, Field(pattern=r"^[0-9]+(_[0-9]+)*$", max_length=64)] | list[StrictInt] | None


class EncodeRequest(BaseModel):
    """Encode an image's first-stage tiles."""

    model_config = ConfigDict(extra="forbid")
    image: str = Field(min_length=1, max_length=255, description="a file name as /api/images lists it")
    pipeline: Literal["v1", "v2"] = "v1"
    steps: Steps = Field(None, description="tile sides in pixels: '256_512_768' (ASCII digits) or [256, 512]")


class LocaliseRequest(EncodeRequest):
    """A SeLo map of a query on an image."""

    query: str = Field(min_length=1, max_length=1000, description="the text to localise")


class Guard:
    """ASGI middleware: the security headers on every answer; a state-changing request from a page of another
    origin refused (403); a request body over ``limit`` bytes refused (413), read no further than that.

    The body (small by design) is read here first, then handed on whole."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(SECURITY_HEADERS)
            await send(message)

        if scope["method"] in UNSAFE_METHODS and not same_origin(Request(scope)):
            origin = Headers(scope=scope).get("origin")
            return await JSONResponse({"detail": f"origin {origin!r} may not change the explorer's state (only its "
                                                 "own page may)"}, status_code=403)(scope, receive, send_with_headers)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self.too_large(scope, receive, send_with_headers)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await self.too_large(scope, receive, send_with_headers)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send_with_headers)

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await JSONResponse({"detail": f"request body over {self.limit} bytes"}, status_code=413)(scope, receive, send)


def same_origin(request: Request) -> bool:
    """Whether a request comes from no web page (no ``Origin``: curl, scripts) or from the explorer's own page.

    A page of another site may send a JSON POST here (a "simple" request needs no preflight for
    ``text/plain``, and a browser sends the cookies-free request anyway); its ``Origin`` is refused.
    """
    origin = request.headers.get("origin")
    if origin is None:
        return request.headers.get("sec-fetch-site") in (None, "same-origin", "none")
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def status_of(error: ExplorerError) -> int:
    """The HTTP status of one of the explorer's errors (by its class: :data:`STATUSES`; 500 for another).

    >>> status_of(ImageChanged("image 'a.png' has changed")), status_of(ExplorerError("?"))
    (409, 500)
    """
    return next((STATUSES[kind] for kind in type(error).__mro__ if kind in STATUSES), 500)


def refusal(error: ExplorerError) -> JSONResponse:
    """The answer to a refused request or a failed job: ``{"detail": "<its line>"}`` with its status."""
    return JSONResponse({"detail": str(error)}, status_code=status_of(error))


def map_url(result_id: str) -> str:
    """Where the page gets a result's map: the ``/outputs/`` route."""
    return f"/outputs/{result_id}.png"


def download_url(result_id: str, kind: str) -> str:
    """Where the page gets a result's download of ``kind``: the ``/api/download`` route."""
    return f"/api/download?result={result_id}&kind={kind}"


def result_answer(result: Result) -> dict:
    """A result's JSON answer: its data (:meth:`Result.as_dict`) and, for a map, the URLs of the map and of
    each download."""
    answer = {"status": "done", **result.as_dict()}
    if result.query is None:
        return answer
    downloads = {kind: {"url": download_url(result.id, kind), **download}
                 for kind, download in answer["downloads"].items()}
    return {**answer, "map_url": map_url(result.id), "downloads": downloads}


def job_state(explorer: Explorer, job: Job) -> dict:
    """A job's JSON answer: its state, position in the queue (0: running), progress, and its error if any."""
    return {"status": job.state, **job.as_dict(explorer.position(job)),
            **({"detail": str(job.error)} if job.error else {})}


def job_answer(explorer: Explorer, job: Job) -> JSONResponse:
    """A job's state: 200 with the result once done, its error once failed, else 202 with its position."""
    if job.state == "done":
        return JSONResponse(result_answer(job.result))
    if job.state == "failed":
        return refusal(job.error)
    status = 200 if job.state == "cancelled" else 202
    return JSONResponse(job_state(explorer, job), status_code=status, headers={"Retry-After": RETRY_SECONDS})


def answer_of(explorer: Explorer, answer: Result | Job) -> JSONResponse:
    """The answer to an encode or localise request: its result, or the job that will make it."""
    return job_answer(explorer, answer) if isinstance(answer, Job) else JSONResponse(result_answer(answer))


def create_app(explorer: Explorer, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app serving ``explorer``; its OpenAPI schema at ``/api/openapi.json`` (no docs pages: they load
    scripts from a CDN).

    ``allowed_hosts``: the ``Host`` headers answered (others get 400), so that a web site whose name is made
    to resolve to 127.0.0.1 cannot read the explorer from a browser (DNS rebinding); None answers any.
    """
    app = FastAPI(title="SeLo explorer", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    app.add_middleware(Guard)

    @app.exception_handler(ExplorerError)
    async def refused(request: Request, error: ExplorerError) -> JSONResponse:
        return refusal(error)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
        problem = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in problem.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {problem.get('msg', 'malformed request')}"}, status_code=422)

    def client_of(request: Request, named: str | None) -> str:
        return named or (request.client.host if request.client else "local")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/images")
    def images() -> dict:
        return {"images": explorer.images()}

    @app.get("/api/image", response_class=FileResponse)
    def image(name: Annotated[str, Query(max_length=255)], side: Annotated[int, Query(ge=16, le=4096)] = 256):
        return FileResponse(explorer.image_jpeg(name, side), media_type="image/jpeg")

    @app.post("/api/encode", responses={202: {"description": "queued or encoding"}})
    def encode(body: EncodeRequest, request: Request, x_selo_client: ClientName = None) -> JSONResponse:
        answer = explorer.encode(body.image, body.pipeline, body.steps, client_of(request, x_selo_client))
        return answer_of(explorer, answer)

    @app.post("/api/localise", responses={202: {"description": "queued or encoding"}})
    def localise(body: LocaliseRequest, request: Request, x_selo_client: ClientName = None) -> JSONResponse:
        answer = explorer.localise(body.image, body.query, body.pipeline, body.steps, client_of(request, x_selo_client))
        return answer_of(explorer, answer)

    @app.get("/api/jobs/{job_id}")
    def job(job_id: JobId) -> JSONResponse:
        return job_answer(explorer, explorer.job(job_id))

    @app.delete("/api/jobs/{job_id}")
    def cancel(job_id: JobId, request: Request,
               x_selo_client: ClientName = None) -> JSONResponse:
        job = explorer.cancel(job_id, client_of(request, x_selo_client))
        return JSONResponse(job_state(explorer, job))

    @app.get("/api/regions")
    def regions(result: Annotated[str, Query(max_length=64)],
                threshold: Annotated[float, Query(ge=0, le=1)] = 0.5) -> dict:
        return {"result": result, "threshold": threshold, "outlines": explorer.regions(result, threshold)}

    @app.get("/outputs/{filename:path}", response_class=FileResponse)
    def output(filename: str):
        return FileResponse(explorer.output_path(filename))

    @app.get("/api/download", response_class=FileResponse)
    def download(result: Annotated[str, Query(max_length=64)], kind: Annotated[str, Query(max_length=16)]):
        path, name = explorer.download(result, kind)
        return FileResponse(path, filename=name)

    return app
