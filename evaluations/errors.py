"""The error of a bad input file, one class for the whole project.

``evaluations`` imports nothing from ``predict``, yet its strict JPEG reader (:mod:`evaluations.jpeg`)
fails on the same files as ``predict``'s readers: the class is defined here and ``predict`` imports it
(``predict.io.annotations.SampleError``), so one ``except SampleError`` catches both.
"""


class SampleError(ValueError):
    """Bad input for one sample (a missing, truncated or corrupt file, a bad annotation); ``str(error)`` is
    one line naming the file and the problem."""
