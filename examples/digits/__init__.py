"""Digits example: SFA CNN and tiny E-SpikeFormer trained on scikit-learn's 8x8 digits."""
