"""`tensorrt_llm.llmapi` of the test double: the config classes the engine imports from there."""

from tensorrt_llm import KvCacheConfig

__all__ = ["KvCacheConfig"]
