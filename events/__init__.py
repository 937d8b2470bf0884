"""Events: the local event log (the source of truth), classification, publishing and the
legacy live feed.

Public surface: ``events.services.event_publish`` / ``event_publish_batch`` for writes,
``events.selectors`` for reads.
"""
