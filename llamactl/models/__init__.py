"""The model catalogue: discovery, the GGUF header reader, memory estimates, downloads."""
