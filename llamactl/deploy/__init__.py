"""Serving what you trained: checkpoint inspection, LoRA conversion, export, smoke check."""
