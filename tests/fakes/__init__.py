"""Fake servers and test media for offline end-to-end tests (design §5): real libraries, fake far ends."""
