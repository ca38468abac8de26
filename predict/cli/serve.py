"""The SeLo explorer: a local web page where a typed query becomes a SeLo map over a large scene.

    selo-serve --images test_data/demo/imgs [--yaml_path demo]   # or: python -m predict.cli.serve ...
    # then open http://127.0.0.1:8000

Pick an image (its tiles are encoded once and kept on disk under ``<images>/.selo/tile_vectors``, or
``--cache``), type a query: the map and its peaks appear over the image. The JSON API the page uses is in
``predict/web/app.py``, the page in ``predict/web/static/`` (package data). Binds to 127.0.0.1 unless
``--host`` says otherwise; serves only the images directly in ``--images`` and its own outputs.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from predict.cli.options import OneLineParser, add_runtime_arguments, add_yaml_argument, runtime_options
from predict.cli.runner import fail_to_start, one_line

# ExplorerConfig's arguments named otherwise by this command (the others are --<argument>)
FLAGS = {"images_dir": "--images", "cache_dir": "--cache", "outputs_dir": "--outputs"}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    add_yaml_argument(parser, "demo")
    parser.add_argument("--images", required=True, help="folder of the images to serve (files directly in it)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (CUDA when available by default)")
    add_runtime_arguments(parser)
    parser.add_argument("--cache", default=None, help="tile-vector folder (default <images>/.selo/tile_vectors)")
    parser.add_argument("--outputs", default=None, help="maps and downloads (default <images>/.selo/outputs)")
    parser.add_argument("--preview_side", type=int, default=1024, help="longer side of the page's map, pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of v2's word shuffling")
    parser.add_argument("--max_tiles", type=int, default=20000, help="most first-stage tiles one request may ask for")
    parser.add_argument("--query_workers", type=int, default=2, help="threads answering queries whose tiles are encoded")
    return parser


def is_loopback(host: str) -> bool:
    """Whether ``host`` is an address of this machine only.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> list[str]:
    """The ``Host`` headers the explorer answers when bound to ``host``: the loopback names, or any name when
    it is bound to another address on purpose.

    >>> allowed_hosts("127.0.0.1")
    ['127.0.0.1', 'localhost', '[::1]']
    """
    return ["127.0.0.1", "localhost", "[::1]"] if is_loopback(host) else ["*"]


def folder_sample(folder: str):
    """The tiles an exported runtime is checked on: of the images directly in ``folder``, as the explorer reads them."""
    from predict.core.tiling import tile_sample
    from predict.io.images import IMAGE_EXTENSIONS
    from predict.io.scene_blocks import middle_rows

    images = sorted(entry.path for entry in os.scandir(folder)
                    if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS)
    return tile_sample(images, middle_rows)  # as selo-localise and selo-index sample: a scene's middle rows


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import uvicorn  # the web stack is needed only to serve

    from predict.encoders.registry import load_encoder
    from predict.errors import EncoderError
    from predict.explorer import Explorer, ExplorerConfig
    from predict.web.app import create_app

    if not is_loopback(args.host):
        print(f"warning: --host {args.host} makes the explorer reachable from other machines", file=sys.stderr)
    try:
        config = ExplorerConfig(images_dir=args.images, cache_dir=args.cache, outputs_dir=args.outputs,
                                preview_side=args.preview_side, seed=args.seed, max_tiles=args.max_tiles,
                                query_workers=args.query_workers)
        encoder = load_encoder(args.yaml_path, device=args.device, sample=folder_sample(config.images_dir),
                               **runtime_options(args))
        explorer = Explorer(encoder, config)
    except (EncoderError, OSError, ValueError) as error:
        return fail_to_start(one_line(error, FLAGS))
    print(f"SeLo explorer: http://{args.host}:{args.port}/ serving {config.images_dir}", file=sys.stderr)
    uvicorn.run(create_app(explorer, allowed_hosts(args.host)), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
