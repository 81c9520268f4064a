"""`rftlab serve`: a self-hosted, Fireworks-compatible RFT service."""
