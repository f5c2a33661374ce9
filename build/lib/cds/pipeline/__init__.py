"""Orchestration and I/O: stage entry points and (later) Prefect flows. No math lives here."""
