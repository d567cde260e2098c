"""Events example: digits turned into short DVS-like event streams, classified by a Speck-compatible stateful SNN."""
