"""Airflow triggers and helpers of SAODF, importable by the triggerer and the DAG files."""
