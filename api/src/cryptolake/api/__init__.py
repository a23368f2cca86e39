"""CryptoLake query gateway: FastAPI over the Gold/Silver Delta tables, with a dashboard."""
