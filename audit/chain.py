"""The hash chain: canonical record bytes, salted subject commitments and link hashes."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from audit.record import AuditRecord

GENESIS = "0" * 64  # prev hash of the first record of every source's chain


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last link of one source's chain: its position and hash."""

    chain_index: int
    hash: str


@dataclass(frozen=True, slots=True)
class Link:
    """A record as the ledger chains it: the body is hashed byte for byte, never re-serialised.

    `body` is canonical JSON of the record without the pseudonym and content text; it carries
    `subject_commitment` = sha256(salt || pseudonym) instead, so that deleting the salt and
    pseudonym (erasure) unlinks the person without changing a hashed byte.
    """

    source: str
    chain_index: int
    record_id: str
    body: str
    prev_hash: str
    hash: str


def subject_commitment(salt: bytes, pseudonym: str) -> str:
    return hashlib.sha256(salt + pseudonym.encode()).hexdigest()


def new_salt() -> bytes:
    return secrets.token_bytes(16)


def content_commitment(salt: bytes, prompt_text: str | None, answer_text: str | None) -> str:
    """sha256(salt || canonical [prompt, answer]): binds the `contents` row to the chain.

    Salted with the record's subject salt, which erasure deletes with the text: afterwards the
    commitment cannot be used to confirm a guess of what was said.
    """
    text = json.dumps([prompt_text, answer_text], separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(salt + b"content\x00" + text.encode()).hexdigest()


def canonical_body(
    record: AuditRecord, chain_index: int, commitment: str, content: str | None = None
) -> str:
    """The JSON text that is hashed: sorted keys, no whitespace, UTF-8.

    `content` is the `content_commitment` of the record's text, present only when text was
    captured; a record without text carries none, so a `contents` row attached to it is forged.
    """
    data = record.to_dict()
    del data["subject_pseudonym"]
    data["prompt_text_captured"] = data.pop("prompt_text") is not None
    data["answer_text_captured"] = data.pop("answer_text") is not None
    data["subject_commitment"] = commitment
    if content is not None:
        data["content_commitment"] = content
    data["chain_index"] = chain_index
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def link_hash(prev_hash: str, body: str) -> str:
    """sha256(prev hash || canonical record bytes), hex."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + body.encode()).hexdigest()


def make_link(
    record: AuditRecord, head: ChainHead | None, commitment: str, content: str | None = None
) -> Link:
    """The next link after `head` (None: the source's first record)."""
    index = 1 if head is None else head.chain_index + 1
    prev = GENESIS if head is None else head.hash
    body = canonical_body(record, index, commitment, content)
    return Link(record.source, index, record.record_id, body, prev, link_hash(prev, body))
