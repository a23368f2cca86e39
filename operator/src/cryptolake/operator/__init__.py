"""CryptoLake operator: the CryptoPipeline CRD and its kopf reconciler."""
