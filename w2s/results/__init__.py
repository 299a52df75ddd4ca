"""What a finished run or sweep shows: metrics and summary tables, plots, curves, reports and comparisons."""
