"""Backends: the systems whose attachments snfs shows (see snfs.backend)."""
