"""The explorer's web page and JSON API (``selo-serve``: :mod:`predict.cli.serve`); the page's files in
``static/`` are package data."""
