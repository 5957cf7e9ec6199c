"""`tensorrt_llm.executor` of the test double: only the package, for `executor.utils`."""
