"""Train a sentiment LSTM, look inside it word by word, and shrink a layer by merging neurons."""
