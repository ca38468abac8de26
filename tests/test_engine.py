"""The overlapped run engine: the same maps, metrics, log and report as the serial run, bit for bit; a byte
budget bounding what is in flight; bad samples failing alone in either mode."""
import json
import re
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from predict.core.pipelines import get_pipeline
from predict.encoders.registry import load_encoder
from predict.io.annotations import load_annotations
from predict.io.logs import setup_logger
from predict.run.engine import ByteBudget, RunConfig, run_testset

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))
from test_generate_selo import red_square_scene, write_yaml  # noqa: E402

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


def run_with(root, imgs, anno, cache_name, **config):
    cache = root / cache_name
    cache.mkdir()
    logger = setup_logger(str(cache))
    encoder = load_encoder(str(write_yaml(root)), device="cpu")
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


def test_byte_budget_bounds_what_is_in_flight_and_lets_an_oversized_request_run_alone():
    budget = ByteBudget(limit=10)
    in_flight, seen, lock, threads = [0], {4: [], 25: []}, threading.Lock(), []

    def work(nbytes, ahead):
        with lock:
            in_flight[0] += nbytes
            seen[nbytes].append(in_flight[0])  # bytes in flight as it starts
        time.sleep(0.2)  # long enough for the jobs admitted beside it to start, even on a loaded machine
        with lock:
            seen[nbytes].append(in_flight[0])  # and as it ends
            in_flight[0] -= nbytes
        budget.release("finish", nbytes, ahead)

    def start(nbytes):
        def started(ahead):
            threads.append(threading.Thread(target=work, args=(nbytes, ahead)))
            threads[-1].start()
        return started

    for nbytes in (4, 4, 4, 25, 4, 4):
        budget.queue(nbytes, start(nbytes))
    deadline = time.monotonic() + 10
    while (budget.queued or budget.used["finish"]) and time.monotonic() < deadline:
        time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=10)
    assert len(threads) == 6 and not any(thread.is_alive() for thread in threads)
    assert budget.used == {"image": 0, "finish": 0} and budget.queued == [] and budget.ahead == 0
    assert max(seen[4]) == 8  # two 4s at once, never a third beside them
    assert seen[25] == [25, 25]  # the oversized one alone from its start to its end


def test_smaller_finishes_go_ahead_only_where_they_leave_the_waiting_one_its_room():
    budget = ByteBudget(limit=10)
    budget.acquire_image(2)
    started = []

    def start(name):
        return lambda ahead: started.append((name, ahead))

    budget.queue(5, start("A"))  # 2 + 5: admitted in order
    budget.queue(6, start("B"))  # 7 + 6 > 10: waits
    budget.queue(1, start("C"))  # fits now (8), and 2 + 1 + 6 leaves B its room: goes ahead
    budget.queue(2, start("D"))  # fits now (10), but 2 + 1 + 2 + 6 > 10 would delay B: waits
    assert started == [("A", False), ("C", True)]
    budget.release("finish", 5)  # A done: 2 + 1 + 6 fits, B is admitted; D (9 + 2) waits
    assert started[2:] == [("B", False)]
    budget.release("finish", 1, ahead=True)  # C done: D, the head now, fits (2 + 6 + 2)
    assert started[3:] == [("D", False)]
    assert budget.ahead == 0 and budget.used == {"image": 2, "finish": 8}


@pytest.mark.parametrize("bad", [dict(workers=-1), dict(memory_limit=0)])
def test_bad_run_settings_are_refused(bad):
    with pytest.raises(ValueError, match="workers|memory_limit"):
        RunConfig(cache_path="x", src_data_path="x", src_anno_path="x", **bad)


def decoding_in_a_thread(budget: ByteBudget, nbytes: int) -> tuple[threading.Thread, threading.Event]:
    """A thread asking ``budget`` for an image of ``nbytes``, and the event it sets once granted."""
    started = threading.Event()
    thread = threading.Thread(target=lambda: (budget.acquire_image(nbytes), started.set()))
    thread.start()
    return thread, started


def test_decoding_ahead_waits_for_the_current_images_finishes_unless_nothing_is_in_flight():
    budget = ByteBudget(limit=10)
    budget.acquire_image(4)  # the current image
    budget.set(reserved=5)  # one finish of it still to come
    thread, started = decoding_in_a_thread(budget, 3)  # 4 + 3 + 5 > 10: waits
    assert not started.wait(0.2)
    budget.set(reserved=0)  # every finish of the current image asked for: 4 + 3 fits
    assert started.wait(5)
    thread.join()
    budget.release("image", 7)
    budget.acquire_image(50)  # larger than the budget, nothing in flight: granted
    assert budget.used["image"] == 50


def test_decoding_ahead_leaves_room_for_the_largest_queued_finish():
    """The encoder runs ahead of finishes waiting for memory, but an image it decodes never takes the
    room a queued finish needs; the finishes admitted in order are not counted, as they end first."""
    budget = ByteBudget(limit=10)
    budget.acquire_image(2)  # a scored image whose samples wait to be finished
    budget.queue(5, lambda ahead: None)  # admitted: 2 + 5
    budget.queue(5, lambda ahead: None)  # 7 + 5 > 10: waits
    thread, started = decoding_in_a_thread(budget, 1)  # fits now (8), and 2 + 1 + 5 leaves the queued 5 its room
    assert started.wait(5)
    thread.join()
    thread, started = decoding_in_a_thread(budget, 3)  # 2 + 1 + 3 + 5 > 10: waits
    assert not started.wait(0.2)
    budget.release("finish", 5)  # the queued 5 is admitted (3 + 5): 8 + 3 > 10 still
    assert not started.wait(0.2)
    budget.release("finish", 5)  # 3 in use, nothing queued: 3 + 3 fits
    assert started.wait(5)
    thread.join()
    assert budget.queued == [] and budget.used == {"image": 6, "finish": 0}


def test_tiles_cut_ahead_are_the_same_batches():
    from predict.core import tiling
    from predict.run.vectors import batches_ahead

    image = np.random.default_rng(0).integers(0, 256, size=(700, 900, 3), dtype=np.uint8)
    tiles = tiling.multiscale_tiles(700, 900, [256, 512])
    expected = list(tiling.tile_batches(image, tiles, 64, 7))
    got = list(batches_ahead(image, tiles, 64, 7))
    assert len(got) == len(expected) > 3
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert list(batches_ahead(image, [], 64, 7)) == []
