"""Runs speech-to-text for Nova audio files."""
