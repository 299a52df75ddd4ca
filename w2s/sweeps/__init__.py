"""Sweeps over model ladders: the ladders, the sweep runner and its shared results table."""
