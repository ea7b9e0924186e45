"""The operators' deck: a terminal UI over the gateway's API and its live event feed."""

from __future__ import annotations
