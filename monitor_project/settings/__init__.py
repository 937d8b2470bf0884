"""Settings modules: ``base`` (development defaults), ``production`` and ``test``."""
