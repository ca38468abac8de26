"""Process-wide runtime settings: made once by a command at start-up, never by the library.

A command (``selo-generate`` ...) calls :func:`configure_process` before any model loads; ``selo-index``
and ``selo-search`` start their Ray with :func:`predict.cli.ray_session.ray_session`. ``localise()``, ``evaluate()``,
:func:`~predict.testset.engine.run_testset` and the archive's functions called from Python leave the allocator,
the OpenCV and torch thread counts, the warnings hooks and filters, the environment and Ray's settings as
they found them (``tests/test_layers.py`` checks the library's code for calls that would change them).
"""
from __future__ import annotations

import ctypes
import os
from contextlib import suppress

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters

GDAL_CACHE_MB = 64  # GDAL's block cache (5 % of the machine's memory by default): reads are block-aligned
_trim_after_samples = False  # set by configure_process: the run hands freed memory back after each sample


def configure_process(*, parallel: bool = True, tuned_torch: bool = True) -> None:
    """The settings a command's run is measured with: large allocations mapped apart
    (:func:`map_large_allocations`), with ``tuned_torch`` torch's environment (:func:`torch_environment`),
    freed memory handed back after each sample (:func:`return_free_memory`), GDAL's block cache held to
    :data:`GDAL_CACHE_MB` (a scene read by stripes decodes each block once, and a cache of gigabytes would
    hold them all), and with ``parallel`` (the run's own threads keep the cores busy) OpenCV on one thread
    per call: some of its parallel paths cost more than they give (the peak search's dilations took 2.4
    times the CPU time of one thread, and longer).

    ``selo-localise`` leaves torch's environment out: with its transparent huge pages, AMFMN on a 10k scene
    read in stripes peaked at 5.2 GB instead of 1.6 GB. The allocator's arenas are capped at one per usable
    core (:func:`cap_malloc_arenas`)."""
    global _trim_after_samples
    map_large_allocations()
    cap_malloc_arenas(len(os.sched_getaffinity(0)))
    if tuned_torch:
        torch_environment()
    os.environ.setdefault("GDAL_CACHEMAX", str(GDAL_CACHE_MB))
    _trim_after_samples = True
    if parallel:
        import cv2
        cv2.setNumThreads(1)


def cap_malloc_arenas(count: int) -> bool:
    """Have glibc keep at most ``count`` (at least 2) malloc arenas instead of 8 per core; False where the C
    library has no ``mallopt``.

    Each thread that allocates under contention gets an arena of its own, and an arena keeps what is freed
    in it for its thread. OpenVINO's worker threads, torch's and the run's own pass tile batches (3 MB for 16
    AMFMN tiles: under :func:`map_large_allocations`' threshold) from one to the other: AMFMN on OpenVINO
    over a 10000 x 10001 JPEG grew by one batch a batch, 1.7 to 2.5 GB; with two arenas it stayed at 1.7 GB,
    in the same time (120 s).
    """
    try:
        return bool(ctypes.CDLL(None).mallopt(M_ARENA_MAX, max(2, count)))
    except (OSError, AttributeError):
        return False


def map_large_allocations(threshold: int = 4 << 20) -> bool:
    """Have glibc serve allocations of ``threshold`` bytes and more from mappings of their own, which go
    back to the system when freed; False where the C library has no ``mallopt`` (not glibc).

    glibc's own threshold grows up to 32 MB as large blocks are freed; after that, freed tile batches
    and JPEG buffers stay in per-thread arenas and add up across the run's threads
    (``MALLOC_MMAP_THRESHOLD_`` does the same from the environment).

    Free memory at the top of an arena is kept up to twice the threshold, as glibc pairs them itself
    (setting one threshold leaves the other at 128 KB): smaller blocks freed and asked for again, such as
    tiles and filter rows, then reuse pages instead of faulting fresh ones in.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
        return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * threshold))
    except (OSError, AttributeError):
        return False


def torch_environment() -> None:
    """Environment settings torch reads once, at its import or first allocation, unless the user set them.

    - ``OMP_WAIT_POLICY=PASSIVE``: the encoder's OpenMP threads sleep between operations instead of spinning
      for the next one, so the threads finishing samples get the cores (15 of 80 CPU-seconds of the
      like-SLM run were spent spinning).
    - ``THP_MEM_ALLOC_ENABLE=1``: torch's CPU allocator asks for transparent huge pages for its blocks of
      2 MB and more. With large blocks mapped afresh (:func:`map_large_allocations`), each batch's
      activations are written into new memory: at 4 KB a page fault, about 0.3 M faults per 1000 tiles of
      the demo encoder, which on a virtual machine cost more than its convolutions.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def return_free_memory() -> None:
    """In a configured process, hand the C heap's free memory back to the system (glibc's ``malloc_trim``;
    nothing elsewhere): what the encoder and earlier samples freed inside the heaps, which their thresholds
    keep, would otherwise stay resident under the next large sample's peak. A no-op in a library call."""
    if _trim_after_samples:
        with suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)
