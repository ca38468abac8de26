"""An archive of scenes on Ray (``selo-index``, ``selo-search``): every scene's tile vectors indexed once,
then "where is X?" answered across the whole archive.

Ray is the engine (Ray Data for the indexing pipeline, Ray tasks for the search): on this machine a local
Ray starts and stops with the command; with ``address`` the command joins an existing cluster. Every path
is made absolute before it is shipped to a worker (a worker's current folder is not the user's), and the
images, the archive and the output folder must be on a file system every node sees.

Private modules: ``store`` (the archive folder: its settings, scene files, catalogue and ``index.json``,
and when a scene file may be used), ``index`` (the Ray Data indexing pipeline), ``search`` (scoring,
ranking, the maps of the top scenes and the search's output folder).
"""
from predict.archive.index import expand_images, index_archive
from predict.archive.search import SUMMARY_NAME, open_search, run_search, search_archive
from predict.archive.store import (CATALOGUE_NAME, INDEX_NAME, SCENES_DIR, SETTINGS_NAME, ArchiveSettings,
                                   check_archive_settings, read_scene, scene_files, scene_path)

__all__ = ["CATALOGUE_NAME", "INDEX_NAME", "SCENES_DIR", "SETTINGS_NAME", "SUMMARY_NAME", "ArchiveSettings",
           "check_archive_settings", "expand_images", "index_archive", "open_search", "read_scene", "run_search", "scene_files", "scene_path",
           "search_archive"]
