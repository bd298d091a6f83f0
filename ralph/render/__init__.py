"""What people and machines read: problems, plans and summaries as text, JSON or annotations."""
