"""The explorer behind ``selo-serve``: the images of one folder, their tile vectors encoded once, one job
queue for the encoder, and SeLo maps of typed queries, as plain data (:mod:`predict.web` speaks HTTP).

Private modules: ``explorer``.
"""
from predict.explorer.explorer import Explorer, ExplorerConfig, Job, RequestError, Result

__all__ = ["Explorer", "ExplorerConfig", "Job", "RequestError", "Result"]
