"""The tiny pipeline framework: candidate types, component protocols, deadlines, traces."""
