"""The SLM testset run: maps of every sample's caption and their official indicators, resumable, keyed by
everything that made them (``selo-generate``, ``selo-evaluate``).

Private modules: ``engine`` (the run: stages on executors, memory admitted, samples committed in order),
``memory`` (the memory plan and its byte semaphore), ``executors`` (threads or inline), ``evaluate`` (a
written map's evaluation, and a cache folder's).
"""
from predict.testset.engine import RunConfig, run_testset
from predict.testset.evaluate import evaluate_folder, evaluate_written_map
from predict.testset.memory import default_memory_limit

__all__ = ["RunConfig", "run_testset", "evaluate_folder", "evaluate_written_map", "default_memory_limit"]
