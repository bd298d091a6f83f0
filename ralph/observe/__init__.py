"""What a run tells: logs, progress, and the summary."""
