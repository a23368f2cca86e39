"""CryptoLake common."""
