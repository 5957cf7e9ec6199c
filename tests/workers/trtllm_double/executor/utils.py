"""`tensorrt_llm.executor.utils` of the test double: the per-request error class."""


class RequestError(RuntimeError):
    """`tensorrt_llm/executor/utils.py` `RequestError`: one request failed, the executor lives.

    `BaseWorker._enqueue_request` (`tensorrt_llm/executor/base_worker.py`) wraps any exception
    raised while building or enqueueing a request (e.g. `_deduce_max_tokens`) as
    `RequestError(str(e))`; the client sees it on the result's first `__anext__`.
    """
