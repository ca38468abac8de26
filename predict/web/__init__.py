"""The explorer's web page and JSON API (``predict/serve.py``)."""
