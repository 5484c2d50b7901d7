"""What people read after a run: the summary, contact sheets and report.html."""
