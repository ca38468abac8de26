"""The explorer's FastAPI app: the page (``static/``), its JSON API, the images and the explorer's outputs.

Routes (every image is named by its file name as ``GET /api/images`` lists it; a bad parameter is a 400
with ``{"detail": "<one line>"}``):

- ``GET /``: the page; ``/static/...``: its script and style (nothing is loaded from elsewhere).
- ``GET /api/images``: ``{"images": [{"name", "height", "width", "bytes", "cached"}, ...]}``.
- ``GET /api/image?name=N&side=S``: a JPEG of the image, longer side at most S pixels.
- ``POST /api/encode`` ``{"image", "pipeline", "steps"}``: encode the image's tiles (200 when done, else 202).
- ``POST /api/localise`` ``{"image", "query", "pipeline", "steps"}``: 200 ``{"map_url", "peaks", "seconds",
  "tiles_encoded", ...}``, or 202 ``{"status": "encoding" | "busy", "done", "total", "message"}`` while an
  image is being encoded (ask again).
- ``GET /outputs/<file>``: a file the explorer wrote (the maps of ``map_url``).
- ``GET /api/download?result=R&kind=probmap|peaks``: the full-resolution GeoTIFF / the peaks GeoJSON.
"""
from __future__ import annotations

import os

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from predict.run.explorer import Explorer, Progress, RequestError

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RETRY_SECONDS = "1"


def _answer(answer, image: str, query: str | None) -> JSONResponse:
    """200 with a finished result, 202 with the progress of the encoding it waits for."""
    if isinstance(answer, Progress):
        return JSONResponse(answer.as_dict((image, query)), status_code=202, headers={"Retry-After": RETRY_SECONDS})
    return JSONResponse(answer.as_dict())


def create_app(explorer: Explorer, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The app serving ``explorer`` (no API docs pages: they load scripts from a CDN).

    ``allowed_hosts``: the ``Host`` headers answered (others get 400), so that a web site whose name is made
    to resolve to 127.0.0.1 cannot read the explorer from a browser (DNS rebinding); None answers any.
    """
    app = FastAPI(title="SeLo explorer", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.exception_handler(RequestError)
    async def refused(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError) -> JSONResponse:
        problem = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in problem.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {problem.get('msg', 'malformed request')}"}, status_code=400)

    @app.get("/")
    def page() -> FileResponse:
        return FileResponse(os.path.join(STATIC_DIR, "index.html"))

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/api/images")
    def images() -> dict:
        return {"images": explorer.images()}

    @app.get("/api/image")
    def image(name: str, side: int = 256) -> FileResponse:
        return FileResponse(explorer.image_jpeg(name, side), media_type="image/jpeg")

    @app.post("/api/encode")
    def encode(body: dict = Body(...)) -> JSONResponse:
        image = body.get("image")
        return _answer(explorer.encode(image, body.get("pipeline", "v1"), body.get("steps")), image, None)

    @app.post("/api/localise")
    def localise(body: dict = Body(...)) -> JSONResponse:
        image, query = body.get("image"), body.get("query")
        answer = explorer.localise(image, query, body.get("pipeline", "v1"), body.get("steps"))
        return _answer(answer, image, query.strip() if isinstance(query, str) else query)

    @app.get("/outputs/{filename:path}")
    def output(filename: str) -> FileResponse:
        return FileResponse(explorer.output_path(filename))

    @app.get("/api/download")
    def download(result: str, kind: str) -> FileResponse:
        path = explorer.download(result, kind)
        return FileResponse(path, filename=os.path.basename(path))

    return app
