"""Test helpers shared by the end-to-end tests: a real Janus, publisher processes, test video."""
