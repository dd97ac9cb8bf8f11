"""Data in: torch Datasets over a nanoedx database, and a user's own tilt series and maps."""
