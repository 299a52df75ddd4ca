"""Active learning: the student picks which cases its supervisor labels (the loop, its strategies, its supervisors)."""
