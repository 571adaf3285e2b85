"""Helpers shared by test files: tiny local data, tokenizers and saved contexts."""
