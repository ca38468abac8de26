"""What every application shares: one SeLo map of a query on an image (tiles cut, encoded once per image
through a :class:`TileVectorStore`, scored against the query, averaged per pixel and filtered), and the
time each stage took.

Private modules: ``maps`` (``localise()`` and its steps), ``vectors`` (the tile-vector store), ``timing``.
"""
from predict.localisation.maps import (LoadedImage, load_image, localise, mostly_valid, nonfinite_scores,
                                       probability_map_of, query_rng, query_vector, score_tiles, tile_cells)
from predict.localisation.timing import StageTimer
from predict.localisation.vectors import TileVectorStore

__all__ = ["LoadedImage", "load_image", "localise", "mostly_valid", "nonfinite_scores", "probability_map_of", "query_rng",
           "query_vector", "score_tiles", "tile_cells", "StageTimer", "TileVectorStore"]
