"""A fake inventory service: it fails while ``broken`` is true."""

from __future__ import annotations


class InventoryDown(Exception):
    """The inventory service did not answer."""


state = {"broken": False, "calls": 0}


def stock(item: str) -> int:
    """How many of ``item`` are in stock."""
    state["calls"] += 1
    if state["broken"]:
        raise InventoryDown(f"no answer for {item}")
    return 7
