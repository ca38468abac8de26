"""An archive of scenes on Ray (``selo-index``, ``selo-search``): every scene's tile vectors indexed once,
then "where is X?" answered across the whole archive.

Private modules: ``archive`` (the store of scene files, the indexing pipeline and the search).
"""
from predict.archive.archive import (CATALOGUE_NAME, INDEX_NAME, SCENES_DIR, SETTINGS_NAME, SUMMARY_NAME,
                                     ArchiveSettings, check_settings, index_archive, open_search, run_search,
                                     search_archive)

__all__ = ["CATALOGUE_NAME", "INDEX_NAME", "SCENES_DIR", "SETTINGS_NAME", "SUMMARY_NAME", "ArchiveSettings",
           "check_settings", "index_archive", "open_search", "run_search", "search_archive"]
