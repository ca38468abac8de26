"""The overlapped run engine: the same maps, metrics, log and report as the serial run, bit for bit; a byte
budget bounding what is in flight; bad samples failing alone in either mode."""
import json
import re
import sys
import threading

import cv2
import numpy as np
import pytest

from predict.core.pipelines import get_pipeline
from predict.encoders.registry import load_encoder
from predict.io.annotations import load_annotations
from predict.io.logs import setup_logger
from predict.testset.engine import RunConfig, run_testset
from predict.testset.memory import ByteSemaphore

from helpers import process_state, red_square_scene, write_yaml

TIME = re.compile(r"\d+\.\d+s\b")
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ")


def mixed_testset(root):
    """Three images of different sizes (two samples on each of two), a missing image, a corrupt one and a
    uniform image whose map is all zero (a warning), in an order that interleaves them."""
    imgs = root / "imgs"
    imgs.mkdir(parents=True)
    entries = []
    for name, (height, width) in {"a.png": (900, 1200), "b.jpg": (1100, 800), "c.png": (700, 1300)}.items():
        box = (height // 3, height // 3 + 200, width // 2, width // 2 + 250)
        image, polygon = red_square_scene(height, width, box)
        cv2.imwrite(str(imgs / name), image)
        entries.append((name, polygon))
    cv2.imwrite(str(imgs / "flat.png"), np.full((600, 600, 3), 120, np.uint8))
    (imgs / "corrupt.jpg").write_bytes(b"not a jpeg")
    square = [[100, 100], [300, 100], [300, 300], [100, 300]]
    order = [entries[0], entries[0], ("missing.png", square), entries[1], ("corrupt.jpg", square), entries[1],
             ("flat.png", square), entries[2], entries[0]]
    anno = [{"caption": f"a red roof {i}", "jpg_name": name, "points": [polygon]}
            for i, (name, polygon) in enumerate(order)]
    (root / "anno.json").write_text(json.dumps(anno))
    return imgs, root / "anno.json"


def run_with(root, imgs, anno, cache_name, encoder=None, **config):
    cache = root / cache_name
    cache.mkdir()
    logger = setup_logger(str(cache))
    encoder = encoder or load_encoder(str(write_yaml(root)), device="cpu")
    run_config = RunConfig(cache_path=str(cache), src_data_path=str(imgs), src_anno_path=str(anno),
                           pipeline=get_pipeline("v1", "256_512"), **config)
    _, failures = run_testset(run_config, encoder, logger, load_annotations(str(anno)))
    for handler in list(logger.handlers):
        handler.close()
    return cache, failures


def log_lines(cache):
    """log.txt without timestamps, seconds and the cache folder's name."""
    lines = (cache / "log.txt").read_text(encoding="utf-8").replace(str(cache), "<cache>").splitlines()
    return [TIME.sub("<t>", STAMP.sub("", line)) for line in lines]


def results(cache):
    data = json.loads((cache / "metrics.json").read_text())
    for record in data["samples"]:
        record.pop("seconds")
        record.pop("seal")  # a digest over the record, its seconds included
    data.pop("timings")
    return data


def assert_same_images(cache, expected):
    """The same maps and report drawings (JPEG, SVG), byte for byte."""
    def drawn(folder):
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in (".jpg", ".svg"))
    files = drawn(expected)
    assert files == drawn(cache)
    assert {"report/overlay_0.svg", "report/thumb_0.jpg", "probmap_8.jpg"} <= set(files)
    for name in files:
        assert (cache / name).read_bytes() == (expected / name).read_bytes(), name


def test_overlapped_run_equals_the_serial_run_bit_for_bit(tmp_path):
    imgs, anno = mixed_testset(tmp_path)
    serial, serial_failures = run_with(tmp_path, imgs, anno, "serial", workers=1)
    parallel, parallel_failures = run_with(tmp_path, imgs, anno, "parallel", workers=3)
    assert serial_failures == parallel_failures == 2  # missing and corrupt, each alone
    assert results(parallel) == results(serial)
    assert log_lines(parallel) == log_lines(serial)
    assert_same_images(parallel, serial)
    log = "\n".join(log_lines(parallel))
    assert "missing.png: image not found" in log and "corrupt.jpg: cannot decode image" in log
    assert "all tile scores are equal" in log
    # the uniform image's warning follows its own block, before the next sample
    assert log.index("all tile scores are equal") < log.index("Processing 7/9")
    assert log.index("Processing 6/9") < log.index("all tile scores are equal")


def test_a_budget_smaller_than_one_sample_runs_samples_alone_with_the_same_results(tmp_path):
    imgs, anno = mixed_testset(tmp_path)
    serial, _ = run_with(tmp_path, imgs, anno, "serial", workers=1)
    tight, failures = run_with(tmp_path, imgs, anno, "tight", workers=4, memory_limit=1)
    assert failures == 2
    assert results(tight) == results(serial)
    assert_same_images(tight, serial)


def test_report_written_from_maps_on_disk_equals_the_one_drawn_during_the_run(tmp_path):
    from predict.io.report import write_report

    imgs, anno = mixed_testset(tmp_path)
    cache, _ = run_with(tmp_path, imgs, anno, "cache", workers=2)
    during = {p.name: p.read_bytes() for p in (cache / "report").iterdir()}
    for path in (cache / "report").iterdir():
        path.unlink()
    write_report(str(cache), str(anno))  # as evaluate_selo.py --report: decodes the overlays again
    after = {p.name: p.read_bytes() for p in (cache / "report").iterdir()}
    assert set(after) == set(during)
    for name in during:
        if name.endswith(".svg"):  # the same marks over the same map file
            assert after[name] == during[name], name
            continue
        # thumbnails shrunk from the in-memory overlay vs from its decoded JPEG: close, not equal
        a, b = (cv2.imdecode(np.frombuffer(d[name], np.uint8), cv2.IMREAD_COLOR) for d in (during, after))
        assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 3, name


def test_byte_semaphore_bounds_what_is_in_flight_and_lets_an_oversized_request_run_alone():
    """Six jobs asked in order (4, 4, 4, 25, 4, 4 bytes of a budget of 10), each held until the test ends it:
    what runs at each moment is read from the tickets and from events, never decided by a sleep."""
    budget = ByteSemaphore(10)
    sizes = (4, 4, 4, 25, 4, 4)
    started, finish = [threading.Event() for _ in sizes], [threading.Event() for _ in sizes]
    tickets = [budget.request(n) for n in sizes]  # places taken in this order, waited for in threads

    def work(i):
        budget.wait(tickets[i])
        started[i].set()
        assert finish[i].wait(20)
        budget.release(sizes[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(sizes))]
    for thread in threads:
        thread.start()

    def running() -> list[int]:
        return [i for i, t in enumerate(tickets) if t.granted and not finish[i].is_set()]

    order = []
    for _ in sizes:  # end the running job that started first; record what runs beside it
        now = running()
        assert all(started[i].wait(20) for i in now)
        order.append(now)
        finish[now[0]].set()
        threads[now[0]].join(timeout=20)
    assert not any(thread.is_alive() for thread in threads) and budget.held == 0
    # two 4s at a time, never a third beside them; the 25 alone from its start to its end; the 4s behind
    # it did not overtake it
    assert order == [[0, 1], [1, 2], [2], [3], [4, 5], [5]]


def test_byte_semaphore_grants_in_order_of_request_never_overtaking():
    budget = ByteSemaphore(10)
    image = budget.request(2)
    a, b, c = budget.request(5), budget.request(6), budget.request(1)
    assert (image.granted, a.granted, b.granted) == (True, True, False)
    assert not c.granted  # 1 would fit, but B asked first
    budget.release(5)  # A done: B (2 + 6) and then C (9) are granted, in order
    assert b.granted and c.granted and budget.held == 9


def test_a_request_beside_what_its_holder_needs_is_granted_alone():
    """A sample's finish waits for the others, not for its own image, even when the two exceed the limit."""
    budget = ByteSemaphore(10)
    budget.acquire(8)  # the sample's image
    budget.acquire(1)  # another sample's work
    finish = budget.request(5, beside=8)  # 14 > 10, and more than its image is held: waits
    later = budget.request(1)  # would fit (10), but asked after the finish
    assert not finish.granted and not later.granted
    budget.release(1)  # only the image is held now: the finish runs beside it, over the limit
    assert finish.granted and budget.held == 13 and not later.granted
    budget.release(5)
    assert later.granted and budget.held == 9


def test_a_closed_semaphore_stops_its_waiters():
    from concurrent.futures import CancelledError

    budget = ByteSemaphore(1)
    budget.acquire(1)
    ticket = budget.request(1)
    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(CancelledError, budget.wait, ticket)))
    thread.start()
    budget.close()
    thread.join(timeout=10)
    assert not thread.is_alive() and len(errors) == 1


def test_the_encoders_batch_is_lowered_to_fit_the_memory_limit_for_the_run_only(tmp_path):
    from predict.testset.memory import resident_bytes

    imgs, anno = mixed_testset(tmp_path)
    serial, _ = run_with(tmp_path, imgs, anno, "serial", workers=1)
    encoder = load_encoder(str(write_yaml(tmp_path)), device="cpu")
    encoder.batch_size, encoder.working_bytes = 64, lambda batch: batch * 10_000_000  # declared: 10 MB a tile
    largest_image = 900 * 1200 * 3  # a.png, decoded
    limit = resident_bytes() + largest_image + 200_000_000  # room for a batch of 16 tiles beside it, not 32
    lowered, failures = run_with(tmp_path, imgs, anno, "lowered", encoder, workers=2, memory_limit=limit)
    assert failures == 2
    assert "Encoder batch lowered from 64 to 16" in (lowered / "log.txt").read_text()
    assert encoder.batch_size == 64  # the encoder as it was given
    assert results(lowered) == results(serial)
    assert_same_images(lowered, serial)


@pytest.mark.parametrize("bad", [dict(workers=-1), dict(memory_limit=0)])
def test_bad_run_settings_are_refused(bad):
    with pytest.raises(ValueError, match="workers|memory_limit"):
        RunConfig(cache_path="x", src_data_path="x", src_anno_path="x", **bad)


def test_tiles_cut_ahead_are_the_same_batches():
    from predict.core import tiling
    from predict.localisation.vectors import batches_ahead

    image = np.random.default_rng(0).integers(0, 256, size=(700, 900, 3), dtype=np.uint8)
    tiles = tiling.multiscale_tiles(700, 900, [256, 512])
    expected = list(tiling.tile_batches(image, tiles, 64, 7))
    got = list(batches_ahead(image, tiles, 64, 7))
    assert len(got) == len(expected) > 3
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert list(batches_ahead(image, [], 64, 7)) == []


def test_library_calls_change_no_process_wide_state(tmp_path):
    from evaluations import evaluate
    from predict import localise

    imgs, anno = mixed_testset(tmp_path)
    encoder = load_encoder(str(write_yaml(tmp_path)), device="cpu")
    before = process_state()
    probmap = localise(imgs / "a.png", "a red roof", encoder, steps="256_512")
    evaluate(probmap, [[[600, 300], [850, 300], [850, 500], [600, 500]]])
    for workers in (1, 3):
        run_with(tmp_path, imgs, anno, f"run_{workers}", workers=workers)
    after = process_state()
    assert after == before


def test_a_samples_warnings_reach_the_log_as_data_not_through_the_warnings_module(tmp_path):
    import warnings

    imgs, anno = mixed_testset(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cache, _ = run_with(tmp_path, imgs, anno, "run", workers=3)
    assert "flat.png: all tile scores are equal" in (cache / "log.txt").read_text()
    assert not [w for w in caught if "all tile scores are equal" in str(w.message)]


def test_the_commands_make_their_process_settings_at_start_up():
    """The positive control of the test above: predict.runtime changes what the library leaves alone."""
    import subprocess

    code = ("import os, cv2; from predict.runtime import configure_process; before = cv2.getNumThreads(); "
            "configure_process(parallel=True); "
            "print(before > 1 or os.cpu_count() == 1, cv2.getNumThreads(), os.environ['OMP_WAIT_POLICY'])")
    env = {key: value for key, value in __import__("os").environ.items() if key != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["True", "1", "PASSIVE"]
