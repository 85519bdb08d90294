"""LLM instruction data: code-token format, readable names, link-prediction and triple-classification records, rendered column-wise to JSONL."""
