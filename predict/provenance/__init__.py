"""Provenance: the one place where every stored thing's content key is derived, and checked before reuse.

Modules: :mod:`~predict.provenance.digests` (content digests), :mod:`~predict.provenance.code` (code
identity), :mod:`~predict.provenance.encoders` (encoder identity, image keys),
:mod:`~predict.provenance.records` (the testset run's records) and :mod:`~predict.provenance.store` (stored
files written with their record, read back verified; atomic writing). Their public names are here.

Tile vectors, maps, metrics records, ``selo-localise`` outputs, explorer results and archive entries are
each keyed by what produced them: the content of their inputs, their parameters, and the code that ran.
Nothing else in the project invents a signature; every consumer asks this module.

- :func:`file_digest`: sha256 of a file's bytes, the project's one hash of content. Memoised as git's
  index does: a memo entry holds only while the file's device, inode, size, mtime_ns and ctime_ns are all
  unchanged (a rewrite that restores the mtime with ``touch -r`` or ``os.utime`` still moves the ctime),
  and a file changed within :data:`RACY_NS` of its hashing is not memoised (timestamps are coarser than
  the writes that can follow a hash). The same rule in the process and on disk (``digests.sqlite``).
- :func:`digest_of`: sha256 of the canonical JSON of any parts; every key is built from it.
- :func:`code_digest`: the source of modules and of every project or plug-in module they import,
  transitively (read from their syntax trees, so the key does not depend on what else a process loaded),
  with the versions of the libraries they import.
- :func:`encoder_identity` / :func:`vectors_key`: what determines an encoder's tile vectors: class, code
  (its modules and the tile cutting), libraries, tile size, precision, the runtime that runs it (torch, or
  an exported model by its key: :func:`runtime_identity`), and its options with every file or folder they
  name (relative paths resolved as the yaml reader resolves them) replaced by its content;
  :func:`network_key`, what an exported model is keyed by.
- :func:`image_key`, :func:`array_key`: an image's content as a given decoder reads it; for a raster read
  through GDAL, :func:`dataset_digest` counts the sidecars GDAL reads with it (external mask, world file,
  ``.aux.xml``).
- :func:`run_settings`, :func:`sample_identity`, :func:`seal`, :func:`reuse_problem`: the testset run's
  records: what a sample's numbers depend on, a digest over each record, and why one cannot be reused.
- :func:`write_stored`, :func:`seal_file`, :func:`read_stored`, :func:`verify_stored`: every other stored
  file is written with a record (the sha256 of its own bytes, the key of what produced it) and read back
  only verified against both (:class:`StoredFileError`: one line naming the file and the reason).
"""
from __future__ import annotations

from predict.errors import SettingsMismatchError, StoredFileError, WriteError
from predict.provenance.code import PROJECT_PACKAGES, code_digest, code_files
from predict.provenance.digests import (CHUNK, DISK_MEMO_BYTES, RACY_NS, SHORT, array_key, canonical_json,
                                        dataset_digest, digest_memo_path, digest_of, file_digest, read_unchanged,
                                        short)
from predict.provenance.encoders import (EXECUTION_ONLY, LIBRARY_FOLDERS, RUN_FOLDER_MARKS, RUNTIME_CODE, TILE_CODE,
                                         encoder_identity, encoder_roots, image_key, network_key, path_digest,
                                         plugin_files_digest, runtime_identity, vector_options, vectors_key)
from predict.provenance.records import (NOT_COMPUTED, SAMPLE_KEYS, check_run_settings, code_version, log_mean_coverage,
                                        map_digests, maps_problem, polygons_digest, reuse_problem, run_settings,
                                        same_sample, sample_identity, seal, seal_problem, settings_differences)
from predict.provenance.store import (RECORD_SUFFIX, atomic_path, atomic_writer, read_stored, read_stored_json,
                                      record_path, remove_stored, seal_file, stored_problem, verify_stored,
                                      write_atomically, write_stored, write_stored_json)

__all__ = ["SettingsMismatchError", "StoredFileError", "WriteError", "PROJECT_PACKAGES", "code_digest", "code_files",
           "CHUNK", "DISK_MEMO_BYTES", "RACY_NS", "SHORT", "array_key", "canonical_json", "dataset_digest",
           "digest_memo_path", "digest_of", "file_digest", "read_unchanged", "short", "EXECUTION_ONLY",
           "LIBRARY_FOLDERS", "RUN_FOLDER_MARKS", "RUNTIME_CODE", "TILE_CODE", "encoder_identity", "encoder_roots",
           "image_key", "network_key", "path_digest", "plugin_files_digest", "runtime_identity", "vector_options",
           "vectors_key", "NOT_COMPUTED", "SAMPLE_KEYS", "check_run_settings", "code_version", "log_mean_coverage",
           "map_digests", "maps_problem", "polygons_digest", "reuse_problem", "run_settings", "same_sample",
           "sample_identity", "seal", "seal_problem", "settings_differences", "RECORD_SUFFIX", "atomic_path",
           "atomic_writer", "read_stored", "read_stored_json", "record_path", "remove_stored", "seal_file",
           "stored_problem", "verify_stored", "write_atomically", "write_stored", "write_stored_json"]
