"""Offline token counting with tiktoken; the encodings ship in `encodings/`."""
