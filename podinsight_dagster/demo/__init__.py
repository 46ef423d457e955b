"""`podrun demo`: the bundled sample podcasts, served on loopback and run through the real pipeline."""
