"""Small shared helpers: atomic file writes, the weights/network cache, seed and shard parsing, devices."""
