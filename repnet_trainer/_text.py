"""Helpers for messages."""


def few(items, limit=5):
    """`"a, b, c and 4 more"`: the first `limit` items, or `"none"`."""
    items = list(items)
    if not items:
        return "none"
    shown = ", ".join(str(item) for item in items[:limit])
    more = len(items) - limit
    return shown + (f" and {more} more" if more > 0 else "")
