"""Retrieval evaluation on BEIR-format folders, through the product's own ingest, index and retriever."""
