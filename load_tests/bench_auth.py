"""Benchmark: token verifications per second, cold (full JWT check) vs cached, per algorithm.

Run: `python -m load_tests.bench_auth [--seconds S]`. Cold verification runs with the cache off
(every call checks size, header, signature and claims); cached repeats one accepted token.
The gateway's budget is > 2,000 requests/s per core in total, so verification must cost a small
fraction of that: cached checks should be well under 10 us.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.auth.keys import load_static_keys, public_key_to_jwk
from gateway.auth.settings import AuthSettings
from gateway.auth.verifier import JwtVerifier

ISSUER = "https://idp.bench.example"
AUDIENCE = "llm-gateway"


def _private_keys() -> dict[str, Any]:
    return {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }


def _rate(call: Callable[[], object], seconds: float) -> float:
    """Calls per second of `call`, measured for about `seconds`."""
    done, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            call()
        done += 100
    return done / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement (default 1)")
    args = parser.parse_args()
    keys = _private_keys()
    with tempfile.TemporaryDirectory() as tmp:
        jwks = Path(tmp) / "jwks.json"
        documents = [public_key_to_jwk(k.public_key()) | {"kid": alg} for alg, k in keys.items()]
        jwks.write_text(json.dumps({"keys": documents}))
        settings = AuthSettings(
            issuer=ISSUER, audience=AUDIENCE, algorithms=tuple(keys), jwks_file=str(jwks)
        )
        source = load_static_keys(settings)
        cached = JwtVerifier(settings, source)
        cold = JwtVerifier(replace(settings, cache_size=0), source)
        print(f"{'algorithm':<10}{'cold /s':>12}{'cold us':>10}{'cached /s':>14}{'cached us':>11}")
        for alg, key in keys.items():
            now = int(time.time())
            claims = {
                "iss": ISSUER,
                "aud": AUDIENCE,
                "sub": "bench",
                "department": "bench",
                "roles": ["user"],
                "iat": now,
                "exp": now + 3600,
            }
            token = jwt.encode(claims, key, algorithm=alg, headers={"kid": alg})
            cold_rate = _rate(partial(cold.verify, token), args.seconds)
            cached_rate = _rate(partial(cached.verify, token), args.seconds)
            print(
                f"{alg:<10}{cold_rate:>12,.0f}{1e6 / cold_rate:>10.1f}"
                f"{cached_rate:>14,.0f}{1e6 / cached_rate:>11.2f}"
            )


if __name__ == "__main__":
    main()
