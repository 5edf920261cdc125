"""Ingestion: sources that produce trades, the engine that buffers and stores them, the recorder CLI."""
