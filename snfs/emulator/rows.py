"""The sys_attachment row for stored bytes: one shape for uploads and the demo data."""

from __future__ import annotations

from snfs.emulator.blobs import BlobWriter


def attachment_row(
    writer: BlobWriter,
    sys_id: str,
    table_name: str,
    table_sys_id: str,
    file_name: str,
    content_type: str,
    user: str,
    stamp: str,
    available: bool,
) -> dict[str, str]:
    """A sys_attachment row for the bytes a writer received (field order as on real instances)."""
    dims = writer.image_size()
    return {
        "size_bytes": str(writer.size),
        "file_name": file_name,
        "sys_mod_count": "0",
        "average_image_color": "",
        "image_width": str(dims[0]) if dims else "",
        "sys_updated_on": stamp,
        "sys_tags": "",
        "table_name": table_name,
        "sys_id": sys_id,
        "image_height": str(dims[1]) if dims else "",
        "sys_updated_by": user,
        "content_type": content_type,
        "sys_created_on": stamp,
        "size_compressed": str(writer.gzip_size()),
        "compressed": "true",
        "state": "available" if available else "pending",
        "table_sys_id": table_sys_id,
        "chunk_size_bytes": "700000",
        "hash": writer.sha256,
        "sys_created_by": user,
    }
