"""Looking at a database: ``info``, ``verify`` and ``preview``, and the package's figure
helpers."""
