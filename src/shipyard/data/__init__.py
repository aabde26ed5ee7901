"""Raw data: the default simulator, reading sources, and making data.dvc's data available."""
