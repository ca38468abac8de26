"""The commands, one module each; ``pyproject.toml``'s entry points name their ``main``.

``generate`` (``selo-generate``, ``selo-generate-v2``; also ``python predict/generate_selo.py`` and
``generate_selo_v2.py``), ``evaluate`` (``selo-evaluate``; ``python predict/evaluate_selo.py``),
``localise`` (``selo-localise``), ``serve`` (``selo-serve``), ``index`` (``selo-index``), ``search``
(``selo-search``), ``compare`` (``selo-compare``). ``selo-check-encoder`` is
:func:`predict.encoders.selfcheck.main` (``python predict/model_encoder.py``). Each module also runs as
``python -m predict.cli.<name>``. Process-wide settings (:mod:`predict.runtime`) are made here, never by the
library.
"""
