"""Self-contained HTML stage reports: one module per report, shared html and plot helpers."""
