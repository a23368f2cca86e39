"""CryptoLake simulator."""
