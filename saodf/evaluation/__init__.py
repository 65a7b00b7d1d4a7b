"""Evaluation of the platform: NAB and SKAB anomaly scoring and forecast backtests."""
