"""CryptoLake lakehouse jobs."""
