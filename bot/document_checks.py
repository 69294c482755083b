"""Checks on a document before it is uploaded for retrieval, so a file OpenAI could not index (or that would
harm whoever unpacks it) is refused with a reply naming it and the problem, and nothing is uploaded.

``check_document(name, data)`` raises ``AttachmentError``: an empty file, a PDF that is not one or needs a
password, an Office file (docx, pptx, xlsx) that is not a valid zip of its kind or unpacks to far more than it
weighs (a zip bomb). It parses, so call it off the event loop (``asyncio.to_thread``). pypdf is imported on
first use (a tenth of a second that start-up need not pay).
"""

from __future__ import annotations

import io
import zipfile

from bot.errors import AttachmentError

# What a real Office file of each kind holds (its main part).
OFFICE_PARTS = {"docx": "word/document.xml", "pptx": "ppt/presentation.xml", "xlsx": "xl/workbook.xml"}
MAX_UNPACKED_BYTES = 512 * 1024 * 1024  # what the parts of one Office file may add up to
MAX_RATIO = 100  # unpacked ÷ packed, beyond a few megabytes: text compresses ~10×, a bomb ~1000×
RATIO_FLOOR_BYTES = 16 * 1024 * 1024
MAX_ENTRIES = 20_000


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def suffix_of(name: str) -> str:
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def check_document(name: str, data: bytes) -> None:
    """Raise ``AttachmentError`` naming ``name`` and its problem when the document can't be used."""
    if not data:
        raise AttachmentError(f"{name} is empty.")
    suffix = suffix_of(name)
    if suffix == "pdf":
        _check_pdf(name, data)
    elif suffix in OFFICE_PARTS:
        _check_office(name, data, suffix)


def _check_pdf(name: str, data: bytes) -> None:
    from pypdf import PasswordType, PdfReader
    from pypdf.errors import DependencyError, PyPdfError

    if b"%PDF-" not in data[:1024]:
        raise AttachmentError(f"{name} is not a PDF (it has no PDF header).")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")  # a PDF with only an owner password opens without one
            except (DependencyError, NotImplementedError):
                opened = PasswordType.NOT_DECRYPTED
            if opened == PasswordType.NOT_DECRYPTED:
                raise AttachmentError(
                    f"{name} is encrypted (password-protected), so I can't read it. Send a copy without the password."
                )
        if not len(reader.pages):
            raise AttachmentError(f"{name} has no pages.")
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise AttachmentError(f"{name} is not a readable PDF (it may be damaged).") from exc


def _check_office(name: str, data: bytes, suffix: str) -> None:
    invalid = f"{name} is not a valid .{suffix} file."
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError) as exc:
        raise AttachmentError(invalid) from exc
    unpacked = sum(entry.file_size for entry in entries)
    too_big = unpacked > MAX_UNPACKED_BYTES or len(entries) > MAX_ENTRIES
    if too_big or (unpacked > RATIO_FLOOR_BYTES and unpacked > MAX_RATIO * len(data)):
        raise AttachmentError(
            f"{name} unpacks to {_mb(unpacked)} from {_mb(len(data))} in {len(entries):,} parts: "
            "that looks like a zip bomb, so I won't open it."
        )
    if OFFICE_PARTS[suffix] not in {entry.filename for entry in entries}:
        raise AttachmentError(invalid)
