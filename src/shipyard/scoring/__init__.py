"""Batch scoring: a table in, partitioned parquet out, on one machine or on Spark."""
