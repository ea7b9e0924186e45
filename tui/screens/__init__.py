"""The deck's screens: one per mode (number keys 1 to 5) and the modals they raise."""

from __future__ import annotations
