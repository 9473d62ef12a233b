"""ServiceNow: the Attachment API (`client`, with `query` for encoded queries and `pager` for
keyset pages), the backend over it (`backend`) and the CCCIF Media Resource API routed beside
it (`cccif`). The registry finds the system by `SYSTEM`."""

from snfs.backends.servicenow.backend import SYSTEM

__all__ = ["SYSTEM"]
