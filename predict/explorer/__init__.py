"""The explorer behind ``selo-serve``: the images of one folder, their tile vectors encoded once, one job
queue for the encoder, and SeLo maps of typed queries, as plain data; what it refuses is a domain error
(:class:`ExplorerError` and its kinds), without HTTP (:mod:`predict.web` speaks HTTP).

Private modules: ``explorer`` (:class:`Explorer`, the facade, and its config), ``requests`` (what may be
asked: image names, queries, pipelines and steps), ``images`` (the folder's images: states, decoded rasters,
tile vectors, thumbnails), ``jobs`` (jobs, the fair queue, the encoder's thread), ``results`` (results and
their records, keyed by content), ``maps`` (the page's map, its peaks and regions, the downloads),
``outputs`` (stored files used only verified); its errors are in :mod:`predict.errors`.
"""
from predict.errors import BadRequest, ExplorerError, ImageChanged, InvalidRequest, JobFailed, NotFound  # noqa: F401
from predict.explorer.explorer import Explorer, ExplorerConfig
from predict.explorer.jobs import Job
from predict.explorer.results import Result

__all__ = ["Explorer", "ExplorerConfig", "Job", "Result", "ExplorerError", "BadRequest", "InvalidRequest",
           "NotFound", "ImageChanged", "JobFailed"]
