"""Settings of a worker process (`llm-worker serve --config FILE`); command-line flags override.

Imports no YAML: the file is parsed only when `--config` is given.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from common.egress import ResidencySettings
from common.settings import Invalid, SettingsError, load, setting
from common.settings_checks import host_port, ip_listen, positive
from common.telemetry import TelemetrySettings
from common.worker_registry import DEFAULT_PREFIX
from workers.sim import SimConfig
from workers.trtllm_options import TrtLlmOptions


@dataclass(frozen=True, slots=True)
class RegistrationSettings:
    """Announce this worker in Redis so that gateways find it (`routing.redis_url`)."""

    redis_url: str = setting(doc="the Redis gateways scan (redis:// or rediss://)")
    advertise: str = setting(
        doc="HOST:PORT gateways connect to (--advertise)",
        expect="a string HOST:PORT",
        check=host_port,
    )
    ttl_s: float = setting(10.0, doc="heartbeat TTL of the registration", check=positive)
    prefix: str = setting(DEFAULT_PREFIX, doc="Redis key prefix (routing.redis_key_prefix)")


@dataclass(frozen=True, slots=True)
class WorkerTls:
    """TLS on the worker's port; with `client_ca_file` only certified gateways may call it."""

    cert_file: str = setting(doc="PEM certificate chain of the worker")
    key_file: str = setting(doc="PEM private key of cert_file")
    client_ca_file: str | None = setting(
        None, doc="require gateway client certificates from this CA (mutual TLS)"
    )


@dataclass(frozen=True, slots=True)
class WorkerTelemetry(TelemetrySettings):
    """Tracing of a worker: the gateway's keys, under the worker's own service name."""

    service_name: str = setting("llm-worker", doc="service.name of the spans")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything a worker process is configured with."""

    engine: Literal["sim", "trtllm"] = setting("sim", doc="sim (no GPU) or trtllm")
    listen: str = setting("127.0.0.1:50061", doc="HOST:PORT of the worker API")
    pool: str = setting("onprem-gpu", doc="pool name matched by policy")
    grace_s: float = setting(10.0, doc="on SIGTERM, how long generations may finish")
    sim: SimConfig = setting(factory=SimConfig, doc="the simulated engine (engine: sim)")
    trtllm: TrtLlmOptions | None = setting(
        None, doc="the TensorRT-LLM engine (required with engine: trtllm)"
    )
    registration: RegistrationSettings | None = setting(
        None, doc="announce this worker in Redis; absent: gateways list it statically"
    )
    tls: WorkerTls | None = setting(None, doc="serve over TLS; absent: plaintext")
    telemetry: WorkerTelemetry = setting(factory=WorkerTelemetry, doc="tracing")
    residency: ResidencySettings = setting(
        factory=ResidencySettings, doc="networks this worker may send data to (registry, OTLP)"
    )
    metrics_listen: str | None = setting(
        None,
        doc="HOST:PORT (IP address) of Prometheus /metrics (slots, queue, KV cache); null: off",
        check=ip_listen,
    )

    def check(self) -> None:
        if self.engine == "trtllm" and self.trtllm is None:
            raise Invalid("trtllm", "required with engine: trtllm (at least model_path)")


# Command-line flag (argparse dest) -> key path in the settings file.
FLAGS = {
    "engine": "engine",
    "listen": "listen",
    "pool": "pool",
    "grace": "grace_s",
    "ttft_ms": "sim.time_to_first_token_ms",
    "itl_ms": "sim.inter_token_latency_ms",
    "max_queue": "sim.max_waiting_queue_length",
    "served_model_name": "trtllm.served_model_name",
    "kv_cache_free_gpu_memory_fraction": "trtllm.kv_cache_free_gpu_memory_fraction",
    "tensor_parallel_size": "trtllm.tensor_parallel_size",
    "max_seq_len": "trtllm.max_seq_len",
    "max_num_tokens": "trtllm.max_num_tokens",
    "trust_remote_code": "trtllm.trust_remote_code",
    "sampler_type": "trtllm.sampler_type",
    "register_redis": "registration.redis_url",
    "advertise": "registration.advertise",
    "register_ttl": "registration.ttl_s",
    "register_prefix": "registration.prefix",
    "tls_cert": "tls.cert_file",
    "tls_key": "tls.key_file",
    "tls_client_ca": "tls.client_ca_file",
    "otlp_endpoint": "telemetry.otlp_endpoint",
    "otlp_insecure": "telemetry.insecure",
    "trace_sample_ratio": "telemetry.sample_ratio",
    "allow_network": "residency.allowed_networks",
    "metrics_listen": "metrics_listen",
}


def worker_settings(args: argparse.Namespace) -> WorkerSettings:
    """The settings file (if `--config`), then every flag given on the command line over it."""
    flags = {dest: value for dest, value in vars(args).items() if value is not None}
    overrides = {FLAGS[dest]: value for dest, value in flags.items() if dest in FLAGS}
    if "otlp_endpoint" in flags:
        overrides["telemetry.enabled"] = True
    trtllm = flags.get("engine") == "trtllm"
    if "model" in flags:
        if trtllm and len(flags["model"]) != 1:
            raise SettingsError(
                "--engine trtllm needs exactly one --model PATH (a model directory)"
            )
        key = "trtllm.model_path" if trtllm else "sim.models"
        overrides[key] = flags["model"][0] if trtllm else flags["model"]
    if "max_num_seqs" in flags:
        key = "trtllm.max_batch_size" if trtllm else "sim.max_num_seqs"
        overrides[key] = flags["max_num_seqs"]
    return load(WorkerSettings, getattr(args, "config", None), overrides)
