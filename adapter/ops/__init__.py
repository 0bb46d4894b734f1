"""The operator's edge: runtime set-up, the command line, the CSV importer, logging and metrics."""
