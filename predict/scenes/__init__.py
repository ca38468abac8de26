"""A user's own scenes (``selo-localise``): any number of images x queries, georeferenced maps, peaks and
regions out, one folder one truth (its ``summary.json``).

Private modules: ``run`` (the run over the scenes and the outputs of one image x query), ``summary`` (the
folder's summary: names, entries and the records of their files).
"""
from predict.scenes.run import SceneConfig, SceneRun, first_stage, localise_scenes, raster_probmap
from predict.scenes.summary import FolderSummary

__all__ = ["SceneConfig", "SceneRun", "first_stage", "localise_scenes", "raster_probmap", "FolderSummary"]
