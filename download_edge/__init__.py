"""download_edge."""
