"""Models: registry (what is on disk), loader (formats, architectures), manager (cache, device, memory)."""
