"""URLs of the reconciliation app (mounted at the root)."""

urlpatterns: list = []
