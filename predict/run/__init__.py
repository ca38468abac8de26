"""Running SeLo: ``localise()`` on one image and query, the tile-vector store, the run over a testset."""
