"""What the adapters register for the core through setup.py's entry points (their summaries, where their
frameworks keep the learner state), found without importing any adapter until one is loaded."""


def registered(group):
    """{name: entry point} of the entry point group ``group`` of the installed packages."""
    from importlib.metadata import entry_points

    points = entry_points()
    found = points.select(group=group) if hasattr(points, "select") else points.get(group, [])  # Python 3.9
    return {point.name: point for point in found}
