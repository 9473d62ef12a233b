"""Whether gzip pays for a file's download: by its content type, else by its name's extension.

gzip on the wire only pays for content that compresses (text, logs, CSV, JSON, XML, e-mails,
uncompressed images and archives, old binary office formats): there it saves a WAN link 3-10×
its time. Most attachments are already compressed (JPEG, PNG, video, audio, zip and its office
formats, PDF): gzip saves them nothing and costs the instance a deflate pass and the client an
inflate pass per byte (docs/PERFORMANCE.md, "gzip only where it pays", has the measurements).
So a download asks for gzip only when the file is known to be text-like; anything else,
unknown binary included, comes as identity.
"""

from __future__ import annotations

import posixpath

# Content types whose bytes compress well.
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/ecmascript",
        "application/x-javascript",
        "application/x-ndjson",
        "application/x-yaml",
        "application/yaml",
        "application/sql",
        "application/x-sh",
        "application/x-csh",
        "application/csv",
        "application/rtf",
        "application/x-tex",
        "application/postscript",
        "application/x-tar",  # an uncompressed archive compresses like its members
        "application/msword",  # the binary office formats before OOXML (not zip)
        "application/vnd.ms-excel",
        "application/vnd.ms-powerpoint",
        "application/vnd.ms-outlook",
        "application/x-msdownload",
        "application/x-ipynb+json",
        "image/bmp",
        "image/x-ms-bmp",
        "image/tiff",
        "image/x-icon",
        "audio/wav",
        "audio/x-wav",
        "message/rfc822",
    }
)

# Types that say nothing about the content: the extension decides.
_GENERIC_TYPES = frozenset(
    {
        "",
        "application/octet-stream",
        "binary/octet-stream",
        "application/binary",
        "application/unknown",
        "application/x-download",
        "application/force-download",
    }
)

_TEXT_EXTENSIONS = frozenset(
    {
        "txt",
        "log",
        "out",
        "err",
        "trace",
        "csv",
        "tsv",
        "json",
        "ndjson",
        "jsonl",
        "xml",
        "html",
        "htm",
        "xhtml",
        "md",
        "rst",
        "yaml",
        "yml",
        "toml",
        "ini",
        "conf",
        "cfg",
        "properties",
        "env",
        "sql",
        "js",
        "mjs",
        "ts",
        "css",
        "scss",
        "svg",
        "eml",
        "mbox",
        "ics",
        "vcf",
        "tex",
        "rtf",
        "ps",
        "eps",
        "sh",
        "bash",
        "py",
        "java",
        "c",
        "h",
        "cpp",
        "hpp",
        "cs",
        "go",
        "rb",
        "pl",
        "php",
        "bat",
        "ps1",
        "har",
        "diff",
        "patch",
        "tar",
        "bmp",
        "tif",
        "tiff",
        "ico",
        "wav",
        "doc",
        "xls",
        "ppt",
        "msg",
        "dat",
        "dump",
    }
)


def gzip_pays(content_type: str, file_name: str) -> bool:
    """True when a download of this file should ask for gzip (its bytes compress)."""
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype not in _GENERIC_TYPES:
        return (
            ctype.startswith("text/") or ctype.endswith(("+json", "+xml")) or ctype in _TEXT_TYPES
        )
    ext = posixpath.splitext(file_name.lower())[1].lstrip(".")
    return ext in _TEXT_EXTENSIONS
