"""Widgets shared by the deck's screens."""

from __future__ import annotations
