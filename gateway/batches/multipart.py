"""The `multipart/form-data` body of `POST /v1/files` (what the openai clients send): its text
fields and its one file, read from a body already bounded in size. (No third-party parser: the
form has two fields, and the body is in memory anyway.)"""

from __future__ import annotations

import re
from typing import NamedTuple

from gateway.errors import InvalidRequest

__all__ = ["Form", "parse_form"]

_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)
_PARAM = re.compile(r';\s*([A-Za-z*]+)="((?:[^"\\]|\\.)*)"|;\s*([A-Za-z*]+)=([^;\s]*)')


class Form(NamedTuple):
    fields: dict[str, str]
    filename: str | None
    file: bytes | None  # the part named `file`


def _disposition(head: bytes) -> dict[str, str]:
    """The Content-Disposition parameters of one part (name, filename)."""
    for line in head.decode("utf-8", "replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-disposition":
            found = {}
            for m in _PARAM.finditer(value):
                key = (m.group(1) or m.group(3)).lower()
                found[key] = m.group(2).replace('\\"', '"') if m.group(1) else m.group(4)
            return found
    return {}


def parse_form(content_type: str, body: bytes) -> Form:
    """The form's fields and file; a 400 for anything else than multipart/form-data."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise InvalidRequest("upload a file as multipart/form-data (fields 'purpose' and 'file')")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise InvalidRequest("multipart/form-data without a boundary")
    delimiter = b"--" + found.group(1).encode("latin-1")
    fields: dict[str, str] = {}
    filename: str | None = None
    file: bytes | None = None
    chunks = body.split(delimiter)
    if len(chunks) < 3:
        raise InvalidRequest("malformed multipart/form-data body")
    for chunk in chunks[1:-1]:  # before the first delimiter: preamble; after the last: "--" epilogue
        part = chunk.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            raise InvalidRequest("malformed multipart/form-data part")
        params = _disposition(head)
        name = params.get("name")
        if name == "file":
            filename, file = params.get("filename") or "input.jsonl", value
        elif name:
            fields[name] = value.decode("utf-8", "replace")
    return Form(fields, filename, file)
