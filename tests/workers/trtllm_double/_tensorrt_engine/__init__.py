"""`tensorrt_llm._tensorrt_engine` of the test double: the LLM over a prebuilt engine."""

from tensorrt_llm import TrtEngineLLM as LLM

__all__ = ["LLM"]
