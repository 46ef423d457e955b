"""Transcription (run-book §4): faster-whisper, publisher transcripts, subtitles, quality guards and the Phase 2 steps."""
