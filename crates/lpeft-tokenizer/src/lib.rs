//! Hugging Face tokenizer.json loading and encoding (single sentences, pairs, truncation) for BERT and RoBERTa families.
