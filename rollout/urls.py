"""URLs of the rollout app (mounted at the root)."""

urlpatterns: list = []
