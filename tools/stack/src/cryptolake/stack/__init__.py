"""CryptoLake stack."""
