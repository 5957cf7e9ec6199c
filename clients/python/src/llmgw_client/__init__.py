"""Python client for the llm-gateway gRPC API (llmgateway.v1.InferenceService)."""

from llmgw_client._proto.llmgateway.v1 import gateway_pb2 as pb
from llmgw_client._requests import RequestOptions
from llmgw_client.aio import AsyncClient
from llmgw_client.client import Client
from llmgw_client.errors import (
    Cancelled,
    DeadlineExceeded,
    FieldViolation,
    GatewayError,
    InternalError,
    InvalidArgument,
    NotFound,
    Overloaded,
    PolicyDenied,
    QuotaViolation,
    RateLimited,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from llmgw_client.retry import RetryPolicy
from llmgw_client.tokens import CallableToken, StaticToken, TokenFile, TokenProvider

__all__ = [
    "AsyncClient",
    "CallableToken",
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "FieldViolation",
    "GatewayError",
    "InternalError",
    "InvalidArgument",
    "NotFound",
    "Overloaded",
    "PolicyDenied",
    "QuotaViolation",
    "RateLimited",
    "RequestOptions",
    "ResourceExhausted",
    "RetryPolicy",
    "StaticToken",
    "TokenFile",
    "TokenProvider",
    "Unauthenticated",
    "Unavailable",
    "pb",
]
