"""Partitioners: the optimal global partitioner, the research baselines and the local (intra-board) split."""
