"""Reading the google.rpc status details that the gateway attaches to a refusal."""

from __future__ import annotations

from typing import TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2

M = TypeVar("M", bound=Message)


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The `grpc-status-details-bin` trailer of `error`; fails the test when there is none."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError("the refusal carries no rich status details")


def detail(error: grpc.aio.AioRpcError, kind: type[M]) -> M | None:
    """The first detail of type `kind` (e.g. ErrorInfo), or None."""
    message = kind()
    for packed in rich_status(error).details:
        if packed.Unpack(message):
            return message
    return None
