"""Checks on a file before anything is uploaded: is it there, small enough, and what its name says it is.

``check_file(name, data, max_bytes=…)`` raises ``AttachmentError`` with one line naming the file and the problem:
empty, over the size limit, a spreadsheet that is not one (xlsx bytes that are not an Office zip, an xls that is
not an Excel workbook), a zip bomb (an Office file that unpacks to far more than it weighs), a text format (csv,
tsv, json, source code…) with binary content, a Parquet file without its magic bytes, a PDF that is not one or
needs a password. Office files and PDFs are checked by ``bot.document_checks``; this module adds the rest and
the common size checks, so every route (interpreter, retrieval) refuses the same bad input the same way. It
parses, so call it off the event loop (``asyncio.to_thread``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from bot.document_checks import OFFICE_PARTS, check_document
from bot.errors import AttachmentError
from bot.upload_routing import DATA_SUFFIXES, DOCUMENT_SUFFIXES, SOURCE_SUFFIXES, suffix_of

CFB_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an OLE compound file: a legacy .xls (or an encrypted .xlsx)
PARQUET_MAGIC = b"PAR1"
TEXT_SAMPLE_BYTES = 64 * 1024  # how much of a text file is looked at
MAX_CONTROL_SHARE = 0.01  # control characters (not tab, newline, carriage return, form feed) a text file may hold
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def check_size(name: str, size: int | None, max_bytes: int) -> None:
    """Refuse a file whose (announced) size is over the limit, before anything is downloaded."""
    if size is not None and size > max_bytes:
        raise AttachmentError(f"{name} is {megabytes(size)}; the limit is {megabytes(max_bytes)}.")


def check_file(name: str, data: bytes, *, max_bytes: int) -> None:
    """Raise ``AttachmentError`` naming ``name`` and its problem when the file can't be used."""
    if not data:
        raise AttachmentError(f"{name} is empty (0 bytes).")
    check_size(name, len(data), max_bytes)
    check = CHECKS.get(suffix_of(name))
    if check is not None:
        check(name, data)


def _office_or_pdf(name: str, data: bytes) -> None:
    if suffix_of(name) == "xlsx" and data.startswith(CFB_MAGIC):
        raise AttachmentError(
            f"{name} is not a plain .xlsx file: it is password-protected (or an old .xls renamed). "
            "Save it again without a password, as .xlsx."
        )
    check_document(name, data)


def _xls(name: str, data: bytes) -> None:
    """A legacy workbook is an OLE compound file; an .xlsx saved as .xls is a zip (checked as an .xlsx)."""
    if data.startswith(CFB_MAGIC):
        return
    if data.startswith(b"PK\x03\x04"):
        _office_zip(name, data)
        return
    raise AttachmentError(f"{name} is not an Excel workbook (its content is not a spreadsheet).")


def _office_zip(name: str, data: bytes) -> None:
    """An .xls that is really an .xlsx: checked as one (zip bomb, workbook part), under its own name."""
    renamed = f"{name}.xlsx"
    try:
        check_document(renamed, data)
    except AttachmentError as exc:
        raise AttachmentError(str(exc).replace(renamed, name)) from exc


def _parquet(name: str, data: bytes) -> None:
    if len(data) < 12 or not (data.startswith(PARQUET_MAGIC) and data.endswith(PARQUET_MAGIC)):
        raise AttachmentError(f"{name} is not a Parquet file (it lacks Parquet's PAR1 markers).")


def _text(name: str, data: bytes) -> None:
    """A text format must be text: no NUL bytes (unless UTF-16 with its byte-order mark), few control bytes."""
    sample = data[:TEXT_SAMPLE_BYTES]
    if sample.startswith(UTF16_BOMS):
        return
    controls = sum(1 for byte in sample if byte < 32 and byte not in (9, 10, 12, 13))
    if b"\x00" in sample or controls > MAX_CONTROL_SHARE * len(sample):
        raise AttachmentError(f"{name} is not a text file: it has binary content, so it can't be a .{suffix_of(name)}.")


Check = Callable[[str, bytes], None]

TEXT_SUFFIXES = frozenset({"csv", "tsv", "json", "md", "markdown", "txt", "html", "htm", "tex", "rst"}) | frozenset(
    SOURCE_SUFFIXES
)

CHECKS: Mapping[str, Check] = MappingProxyType(
    {
        **dict.fromkeys(TEXT_SUFFIXES, _text),
        **dict.fromkeys([*OFFICE_PARTS, "pdf"], _office_or_pdf),
        "xls": _xls,
        "parquet": _parquet,
    }
)

# Every suffix of the default routes' data and documents has a check or is plain text.
assert set(DATA_SUFFIXES + DOCUMENT_SUFFIXES) <= set(CHECKS)
