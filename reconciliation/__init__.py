"""Reconciliation: hourly proof that the Supabase copy holds exactly the local log."""
