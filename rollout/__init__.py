"""Rollout: the waffle flag with sticky buckets, stages, kill switch, health and rollback."""
