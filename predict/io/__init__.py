"""Files in and out: annotation files and images, map files and logs, the results store, the report."""
