"""CryptoLake producer."""
