"""`llm-gateway ask`: send one request and print the streamed answer as it arrives."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from llmgateway.v1 import gateway_pb2 as pb
from llmgateway.v1 import gateway_pb2_grpc as pb_grpc


def add_ask_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ask = subparsers.add_parser("ask", help="send one prompt and print the streamed answer")
    ask.add_argument("prompt", help="the text to send")
    ask.add_argument("--target", default="127.0.0.1:50051", help="gateway host:port")
    ask.add_argument("--model", default="llama-3.1-8b-instruct")
    ask.add_argument("--max-tokens", type=int, default=64)
    ask.add_argument("--token", help="bearer token (default: read --token-file if given)")
    ask.add_argument(
        "--token-file",
        type=Path,
        default=Path(".data/dev-token"),
        help="file holding the bearer token (default: the dev stack's .data/dev-token)",
    )
    ask.add_argument("--classification", default="")
    ask.add_argument("--purpose", default="")
    ask.add_argument("--timeout", type=float, default=60.0, help="deadline in seconds")
    ask.set_defaults(func=ask_command)


def ask_command(args: argparse.Namespace) -> int:
    token = args.token
    if token is None and args.token_file.exists():
        token = args.token_file.read_text().strip()
    metadata: tuple[tuple[str, str | bytes], ...] = (
        (("authorization", f"Bearer {token}"),) if token else ()
    )
    request = pb.GenerateStreamRequest(
        model=args.model,
        prompt=args.prompt,
        sampling=pb.SamplingParams(max_tokens=args.max_tokens),
        classification=args.classification,
        purpose=args.purpose,
    )
    with grpc.insecure_channel(args.target) as channel:
        stub = pb_grpc.InferenceServiceStub(channel)
        try:
            for message in stub.GenerateStream(request, metadata=metadata, timeout=args.timeout):
                if message.text:
                    print(message.text, end="", flush=True)
                elif message.finish_reason:
                    u = message.usage
                    print(
                        f"\n[{pb.FinishReason.Name(message.finish_reason)}; "
                        f"{u.prompt_tokens} prompt + {u.completion_tokens} completion tokens; "
                        f"request {message.request_id}]",
                        file=sys.stderr,
                    )
        except grpc.RpcError as exc:
            print(f"\nerror: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0
