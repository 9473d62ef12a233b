"""The --demo data set: a few records per table and attachments that show every interesting case.

Everything is deterministic (sys_ids, timestamps, bytes), so docs and tests can name them.
"""

from __future__ import annotations

import hashlib
import random
import struct
import zlib
from datetime import datetime, timedelta

from snfs.emulator.blobs import BlobStore
from snfs.emulator.db import Store
from snfs.emulator.rows import attachment_row

BASE_TIME = datetime(2026, 1, 5, 9, 0, 0)


def demo_id(key: str) -> str:
    """A fixed 32-hex sys_id for a demo object."""
    return hashlib.md5(f"snfs-demo:{key}".encode()).hexdigest()


def stamp(minutes: int) -> str:
    return (BASE_TIME + timedelta(minutes=minutes)).strftime("%Y-%m-%d %H:%M:%S")


def png(width: int, height: int) -> bytes:
    """A real RGB PNG (a gradient), built with zlib and struct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    rows = b"".join(  # filter byte 0, then RGB pixels
        b"\x00" + b"".join(bytes((x * 255 // width, y * 255 // height, 128)) for x in range(width))
        for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def pdf(text: str) -> bytes:
    """A small valid one-page PDF showing `text`."""
    stream = f"BT /F1 18 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{off:010d} 00000 n \n".encode() for off in offsets)
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    return bytes(out)


def binary(size: int, seed: int = 2026) -> bytes:
    return random.Random(seed).randbytes(size)


# (key, table, number, short_description)
RECORDS = [
    ("inc1", "incident", "INC0010001", "Email server is down"),
    ("inc2", "incident", "INC0010002", "VPN disconnects every hour"),
    ("inc3", "incident", "INC0010003", "Printer on floor 3 jams (no attachments)"),
    ("prb1", "problem", "PRB0010001", "Recurring mail outages"),
    ("chg1", "change_request", "CHG0010001", "Upgrade the mail server"),
    ("kb1", "kb_knowledge", "KB0010001", "How to connect to the VPN"),
    ("hrc1", "hr_case", "HRC0010001", "Relocation request"),
]


def attachments() -> list[tuple[str, str, str, str, str, bytes]]:
    """(key, table_name, record key, file_name, content_type, bytes)."""
    return [
        ("readme", "incident", "inc1", "readme.txt", "text/plain", b"Mail server outage notes.\n"),
        ("shot", "incident", "inc1", "screenshot.png", "image/png", png(64, 48)),
        ("report", "incident", "inc1", "report.pdf", "application/pdf", pdf("Outage report")),
        ("dup1", "incident", "inc1", "notes.txt", "text/plain", b"first notes.txt\n"),
        ("dup2", "incident", "inc1", "notes.txt", "text/plain", b"second notes.txt, same name\n"),
        ("space", "incident", "inc1", "meeting notes.txt", "text/plain", b"name with spaces\n"),
        (
            "resume",
            "incident",
            "inc1",
            "r\u00e9sum\u00e9.txt",
            "text/plain",
            "unicode name: r\u00e9sum\u00e9\n".encode(),
        ),
        (
            "percent",
            "incident",
            "inc1",
            "100% done #1.txt",
            "text/plain",
            b"percent and hash in the name\n",
        ),
        ("caret", "incident", "inc1", "a^b.txt", "text/plain", b"caret in the name\n"),
        ("slash", "incident", "inc1", "reports/2026.txt", "text/plain", b"slash in the name\n"),
        (
            "big",
            "incident",
            "inc2",
            "capture.bin",
            "application/octet-stream",
            binary(3 * 1024 * 1024),
        ),
        (
            "vpnlog",
            "incident",
            "inc2",
            "vpn.log",
            "text/plain",
            b"".join(f"2026-01-05 09:{m:02d}:00 tunnel reset\n".encode() for m in range(60)),
        ),
        ("rca", "problem", "prb1", "root-cause.txt", "text/plain", b"Root cause: disk full.\n"),
        ("plan", "change_request", "chg1", "plan.pdf", "application/pdf", pdf("Change plan")),
        (
            "howto",
            "kb_knowledge",
            "kb1",
            "vpn-howto.txt",
            "text/plain",
            b"1. Install the client.\n",
        ),
        (
            "hr",
            "hr_case",
            "hrc1",
            "confidential.txt",
            "text/plain",
            b"HR only: relocation details.\n",
        ),
        # An image field of incident 1: stored under ZZ_YYincident, pointing at the incident.
        ("field", "ZZ_YYincident", "inc1", "avatar.png", "image/png", png(16, 16)),
    ]


def seed(store: Store, blobs: BlobStore) -> None:
    minute = 0
    for key, table, number, text in RECORDS:
        values = {
            "number": number,
            "short_description": text,
            "state": "1",
            "priority": "3",
            "active": "true",
        }
        if key == "inc1":
            values["image"] = demo_id("att:field")  # the image field holds its attachment's sys_id
        store.insert_record(table, values, "admin", sys_id=demo_id(key), created_on=stamp(minute))
        minute += 1
    store.conn.executemany(
        "INSERT OR REPLACE INTO counters (table_name, next) VALUES (?, 10010)",
        [(table,) for _, table, _, _ in RECORDS],
    )
    for key, table_name, record, name, ctype, data in attachments():
        writer = blobs.writer()
        writer.write(data)
        writer.close()
        sys_id = demo_id("att:" + key)
        row = attachment_row(
            writer,
            sys_id,
            table_name,
            demo_id(record),
            name,
            ctype,
            "admin",
            stamp(minute),
            available=True,
        )
        # As after the real pending -> available transition.
        row.update(sys_mod_count="1", sys_updated_by="system", sys_updated_on=stamp(minute))
        blobs.commit(writer, sys_id)
        store.insert_attachment(row, None)
        minute += 1
