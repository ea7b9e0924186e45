"""Chaos: real processes killed, cut off and restarted, and what must still hold after."""
