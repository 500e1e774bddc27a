"""Command-line programs: `dig2dig` (fuse, eval, prior-eval, plot-dig), `dig2dig-ros`, `dig2dig-train-prior`."""
