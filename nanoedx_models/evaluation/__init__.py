"""Scoring denoisers: metrics, the 2D/3D benchmark, the hold-out score on real data, the
leaderboard's tables and figures."""
